//! The Pod's security context without Docker: the sidecar as an
//! unprivileged user (`nobody`) on a read-only root filesystem with one
//! writable model volume, as `deploy/vllm-with-runtime.yaml` runs it
//! (`runAsNonRoot`, `readOnlyRootFilesystem`, an `emptyDir`). Everything
//! it does must work there, and a download aimed at the read-only part
//! gets a clear 403.

use crate::download::{assert_same_tree, bucket, download_llama};
use crate::util::*;

#[test]
fn runs_as_nobody_on_a_read_only_root_filesystem() {
    let fixture = bucket("container-s3", 3);
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    // Where nobody can reach it (the test's directories are under /root).
    let volume = std::env::temp_dir().join(format!("matrixinfer-volume-{}", std::process::id()));
    std::fs::create_dir_all(&volume).unwrap();
    // /root is closed to nobody: a link to the binary where it can reach it.
    let bin = std::env::temp_dir().join(format!("matrixinfer-runtime-{}", std::process::id()));
    let _ = std::fs::remove_file(&bin);
    std::fs::hard_link(BIN, &bin)
        .or_else(|_| std::fs::copy(BIN, &bin).map(drop))
        .unwrap();
    let root = rustix::process::geteuid().is_root();
    // A private mount namespace: the volume a tmpfs, then `/` read-only
    // (per mount, so the host is untouched), then drop to nobody.
    let script = format!(
        "mount -t tmpfs -o size=256m,mode=1777 tmpfs {volume} && mount -o remount,bind,ro / && \
         exec {drop} {bin} \"$@\"",
        volume = volume.display(),
        bin = bin.display(),
        drop = if root {
            // A new user ID clears the parent-death signal: set it again.
            "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --pdeathsig KILL"
        } else {
            // Without root, a user namespace maps us to root in it; the
            // uid cannot change, the read-only root still holds.
            ""
        },
    );
    let mut launcher = vec!["unshare", "--mount"];
    if !root {
        launcher.push("--map-root-user");
    }
    launcher.extend(["sh", "-c", &script]);
    // `sh -c script $0 args…`: the `$0` slot is taken by the binary's path
    // that the launcher appends; the script execs the link instead.
    let sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .launcher(&launcher)
        .start();

    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.child.id())).unwrap();
    if root {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains("65534")),
            "{status}"
        );
    }
    let scrape = get(sidecar.addr, "/metrics");
    assert_eq!(scrape.status, 200);
    assert_eq!(get(sidecar.addr, "/health").status, 200);

    let out = volume.join("llama");
    let ok = download_llama(&sidecar, &fixture.server.endpoint(), &out, "");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = std::path::Path::new(&format!("/proc/{}/root", sidecar.child.id()))
        .join(out.strip_prefix("/").unwrap());
    assert_same_tree(&fixture.server.root.join("models/llama"), &seen);

    let refused = download_llama(
        &sidecar,
        &fixture.server.endpoint(),
        std::path::Path::new("/opt/models/llama"),
        "",
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    let detail = refused.detail();
    assert!(
        detail.contains("/opt/models/llama")
            && (detail.contains("Read-only file system") || detail.contains("Permission denied")),
        "{detail}"
    );
    assert_eq!(get(sidecar.addr, "/health").status, 200);
    drop(sidecar);
    let _ = std::fs::remove_file(&bin);
    let _ = std::fs::remove_dir(&volume);
}
