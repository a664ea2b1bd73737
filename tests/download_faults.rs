//! Sources that misbehave during a download: short ranges, an object that
//! changes midway, a clock outside the signature window, a full disk, a
//! Hub answering 5xx and CDN links that expire. Each time the sidecar
//! keeps answering, says what went wrong, and no unverified file reaches
//! its final path.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::download::{
    MIB, assert_same_tree, bucket, download_body, download_llama, hub_files, hub_repo, s3_config,
    start_job,
};
use crate::hub::{Hub, HubFaults};
use crate::proxy::{Faults, Proxy, ShortRanges};
use crate::s3::S3Server;
use crate::util::*;

/// A sidecar with an engine beside it, so that `/metrics` answers 200
/// with the runtime's own counters.
fn sidecar_with_engine() -> (Proc, Proc) {
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    (engine, sidecar)
}

fn still_serving(sidecar: &Proc) {
    assert_eq!(get(sidecar.addr, "/health").status, 200);
    assert_eq!(get(sidecar.addr, "/metrics").status, 200);
}

/// Files left below `dir` other than the verified log and the lock.
fn leftovers(dir: &Path) -> Vec<String> {
    files_below(dir)
        .into_iter()
        .filter(|f| !f.ends_with(".matrixinfer-verified") && !f.ends_with(".lock"))
        .collect()
}

#[test]
fn s3_ranges_shorter_than_asked_are_completed_and_verified() {
    let fixture = bucket("s3-short", 6);
    let short = ShortRanges::start(fixture.server.addr);
    let (_engine, sidecar) = sidecar_with_engine();
    let out = temp_dir("s3-short-out");
    let response = download_llama(&sidecar, &short.endpoint(), &out, "");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    assert!(
        short.shortened.load(SeqCst) >= 5,
        "the store shortened nothing"
    );
    assert!(
        metric(
            &sidecar,
            "matrixinfer_runtime_download_retries_total{source=\"s3\"}"
        ) >= 1.0
    );
}

/// Downloads `fixture`'s prefix asynchronously through a proxy slow
/// enough (2 workers at 8 MiB/s each: the 9 parts of the large file take
/// seconds) to replace the large object with other bytes of the same size
/// once a few MiB have arrived: a new version uploaded while the download
/// runs. Returns the job's final status, the new bytes and the sidecar.
fn download_while_replaced(
    fixture: &crate::download::Fixture,
    out: &Path,
) -> (serde_json::Value, Vec<u8>, Proc, Proc) {
    let slow = Proxy::start(
        fixture.server.addr,
        Faults {
            bytes_per_second: 8 * MIB as u64,
            ..Faults::default()
        },
    );
    let (engine, sidecar) = sidecar_with_engine();
    let body = download_body(
        "s3://models/llama",
        out,
        &s3_config(&slow.endpoint()),
        r#"{"max_workers": 2, "async_download": true}"#,
    );
    let id = start_job(&sidecar, "/v1/download_model", &body);
    let key = fixture
        .server
        .root
        .join("models/llama/weights/model-00001-of-00001.safetensors");
    eventually("the download is under way", || {
        slow.bytes.load(SeqCst) > 4 * MIB as u64
    });
    let newer = noise(fixture.large.len(), 77);
    let staged = key.with_extension("staged");
    std::fs::write(&staged, &newer).unwrap();
    std::fs::rename(&staged, &key).unwrap();
    let status = wait_for_job(&sidecar, &id, patience());
    (status, newer, engine, sidecar)
}

#[test]
fn s3_object_replaced_midway_is_refused_then_fetched_whole() {
    let fixture = bucket("s3-changed", 3);
    let out = temp_dir("s3-changed-out");
    let (status, newer, _engine, sidecar) = download_while_replaced(&fixture, &out);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains(
            "weights/model-00001-of-00001.safetensors: the object changed during the download"
        ),
        "{error}"
    );
    let large = out.join("weights/model-00001-of-00001.safetensors");
    assert!(!large.exists(), "a file mixing two versions landed");
    still_serving(&sidecar);

    // Asked again, it fetches the new version whole: no part of the old
    // one is kept for it.
    let again = download_body(
        "s3://models/llama",
        &out,
        &s3_config(&fixture.server.endpoint()),
        "",
    );
    let response = post_json(sidecar.addr, "/v1/download_model", &again);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(std::fs::read(&large).unwrap(), newer);
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
}

#[test]
fn s3_object_replaced_midway_on_a_store_without_if_match_never_lands() {
    let root = temp_dir("s3-changed-unconditional");
    let server = S3Server::start_unconditional(&root).unwrap();
    let old = noise(70 * MIB + 12345, 1);
    server.put(
        "models",
        "llama/weights/model-00001-of-00001.safetensors",
        &old,
    );
    let fixture = crate::download::Fixture { server, large: old };
    let out = temp_dir("s3-changed-unconditional-out");
    let (status, _, _engine, sidecar) = download_while_replaced(&fixture, &out);
    // The store mixed the versions; the ETag of the listing catches it.
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("MD5 (ETag) mismatch"), "{error}");
    assert!(error.contains("the file was not kept"), "{error}");
    assert_eq!(leftovers(&out), Vec::<String>::new());
    still_serving(&sidecar);
}

#[test]
fn s3_signatures_from_a_clock_an_hour_behind_are_corrected() {
    let fixture = bucket("s3-skew", 3);
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    // The sidecar's clock runs an hour behind the store's: every request
    // it signs is outside S3's 15-minute window until it learns the skew
    // from the store's Date header.
    let sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .launcher(&["faketime", "-f", "-1h", "setpriv", "--pdeathsig", "KILL"])
        .start();
    let out = temp_dir("s3-skew-out");
    let response = download_llama(&sidecar, &fixture.server.endpoint(), &out, "");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    let log = sidecar.log();
    assert!(
        log.contains("this machine's clock differs from the store's"),
        "{log}"
    );
    let skew: i64 = log
        .split("skew_seconds=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!((3590..=3610).contains(&skew), "{skew}");
    still_serving(&sidecar);
}

#[test]
fn s3_credentials_refused_for_other_reasons_are_not_retried_as_skew() {
    // The same refusal with a sane clock: a wrong secret is a 403 at once.
    let fixture = bucket("s3-no-skew", 1);
    let sidecar = crate::download::sidecar();
    let out = temp_dir("s3-no-skew-out");
    let config = serde_json::json!({
        "access_key": crate::s3::ACCESS_KEY,
        "secret_key": "not-the-secret",
        "endpoint": fixture.server.endpoint(),
    });
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://models/llama", &out, &config.to_string(), ""),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(!sidecar.log().contains("clock differs"));
}

/// A sidecar whose `volume` (a directory it returns) is a tmpfs of
/// `mib` MiB, in a mount namespace of its own (no root needed where user
/// namespaces are allowed).
fn sidecar_with_a_small_volume(name: &str, mib: u32) -> (Proc, Proc, std::path::PathBuf) {
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let volume = temp_dir(name);
    let mount = format!(
        "mount -t tmpfs -o size={mib}m tmpfs {} && exec \"$0\" \"$@\"",
        volume.display()
    );
    let sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .launcher(&["unshare", "--map-root-user", "--mount", "sh", "-c", &mount])
        .start();
    (engine, sidecar, volume)
}

/// `path` as `sidecar` sees it, through its mount namespace.
fn seen_by(sidecar: &Proc, path: &Path) -> std::path::PathBuf {
    Path::new(&format!("/proc/{}/root", sidecar.child.id())).join(path.strip_prefix("/").unwrap())
}

/// Files are preallocated before any byte is fetched, so a model larger
/// than the volume fails at once rather than after filling it, and space
/// taken is space kept: nothing else filling the disk later can make a
/// transfer's writes fail.
#[test]
fn disk_full_is_507_and_gives_the_space_back() {
    let fixture = bucket("s3-full", 4);
    let (_engine, sidecar, volume) = sidecar_with_a_small_volume("s3-full-volume", 32);
    let out = volume.join("llama");
    let response = download_llama(&sidecar, &fixture.server.endpoint(), &out, "");
    assert_eq!(response.status, 507, "{}", response.text());
    assert!(
        response.detail().contains("no space left on the device"),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_downloads_total{source=\"s3\",outcome=\"failed\"}"
        ),
        1.0
    );
    // What is left on the volume: no unverified file anywhere, and the
    // space given back.
    let seen = seen_by(&sidecar, &volume);
    let files = files_below(&seen);
    assert!(
        files
            .iter()
            .all(|f| !f.contains(".mi-part") && !f.ends_with(".safetensors")),
        "{files:?}"
    );
    let used: u64 = files
        .iter()
        .map(|f| std::fs::metadata(seen.join(f)).unwrap().blocks() * 512)
        .sum();
    assert!(used < MIB as u64, "{used} bytes still used: {files:?}");
    // The same download to a volume with room works.
    let roomy = temp_dir("s3-full-roomy");
    let response = download_llama(&sidecar, &fixture.server.endpoint(), &roomy, "");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &roomy);
}

/// The space a download needs is taken before it fetches: another
/// writer filling the volume midway cannot make it fail. (The small
/// bookkeeping writes that could, the verified log and the resume
/// journal, are not worth failing a verified download for.)
#[test]
fn a_volume_filled_by_another_writer_midway_does_not_fail_the_download() {
    let fixture = bucket("s3-filled", 40);
    let slow = Proxy::start(
        fixture.server.addr,
        Faults {
            bytes_per_second: 16 * MIB as u64,
            ..Faults::default()
        },
    );
    let (_engine, sidecar, volume) = sidecar_with_a_small_volume("s3-filled-volume", 96);
    let out = volume.join("llama");
    let body = download_body(
        "s3://models/llama",
        &out,
        &s3_config(&slow.endpoint()),
        r#"{"max_workers": 2, "async_download": true}"#,
    );
    let id = start_job(&sidecar, "/v1/download_model", &body);
    eventually("the download is under way", || {
        slow.bytes.load(SeqCst) > 8 * MIB as u64
    });
    // Someone else takes every byte left.
    let mut filler = std::fs::File::create(seen_by(&sidecar, &volume).join("filler")).unwrap();
    let chunk = vec![7u8; MIB];
    let full = loop {
        if let Err(e) = std::io::Write::write_all(&mut filler, &chunk) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(28), "{full}");
    let status = wait_for_job(&sidecar, &id, patience());
    assert_eq!(status["state"], "completed", "{status}");
    assert_same_tree(
        &fixture.server.root.join("models/llama"),
        &seen_by(&sidecar, &out),
    );
    // The full disk did refuse the bookkeeping; the download stood.
    assert!(sidecar.log().contains("not recorded"), "{}", sidecar.log());
    still_serving(&sidecar);
}

#[test]
fn huggingface_5xx_now_and_then_is_retried() {
    let repo = hub_repo(None, false);
    // Every third request to the Hub or its CDN fails with 500 or 503.
    let hub = Hub::start_with(
        vec![repo.clone()],
        HubFaults {
            error_every: 3,
            ..HubFaults::default()
        },
    );
    let (_engine, sidecar) = sidecar_with_engine();
    let out = temp_dir("hf-5xx");
    let config = serde_json::json!({ "hf_endpoint": hub.endpoint() });
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/tiny-llama", &out, &config.to_string(), ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    hub_files(&repo, &out);
    assert!(hub.errors.load(SeqCst) >= 2, "no 5xx was injected");
    still_serving(&sidecar);
}

#[test]
fn huggingface_always_failing_gives_up_with_a_clear_error() {
    let repo = hub_repo(None, false);
    let hub = Hub::start_with(
        vec![repo],
        HubFaults {
            error_every: 1,
            ..HubFaults::default()
        },
    );
    let (_engine, sidecar) = sidecar_with_engine();
    let out = temp_dir("hf-down");
    let config = serde_json::json!({ "hf_endpoint": hub.endpoint() });
    let body = download_body(
        "acme/tiny-llama",
        &out,
        &config.to_string(),
        r#"{"async_download": true}"#,
    );
    let id = start_job(&sidecar, "/v1/download_model", &body);
    // Still answering while the job backs off.
    still_serving(&sidecar);
    // 8 attempts with exponential backoff: about 15 s, up to 30.
    let status = wait_for_job(&sidecar, &id, Duration::from_secs(90));
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("gave up after 8 attempts"), "{error}");
    assert!(error.contains("HTTP 50"), "{error}");
    assert!(hub.errors.load(SeqCst) >= 8);
    assert_eq!(leftovers(&out), Vec::<String>::new());
    still_serving(&sidecar);
}

#[test]
fn huggingface_cdn_links_that_expire_midway_are_resolved_again() {
    let repo = hub_repo(Some("hf_expiry_token"), false);
    // Links live 1 s; the 40 MiB file takes about 5 s at 8 MiB/s.
    let hub = Hub::start_with(
        vec![repo.clone()],
        HubFaults {
            link_lifetime: Some(Duration::from_secs(1)),
            cdn_bytes_per_second: 8 * MIB as u64,
            ..HubFaults::default()
        },
    );
    let sidecar = crate::download::sidecar();
    let out = temp_dir("hf-expiry");
    let config =
        serde_json::json!({ "hf_endpoint": hub.endpoint(), "hf_token": "hf_expiry_token" });
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "acme/private-model",
            &out,
            &config.to_string(),
            r#"{"max_workers": 1}"#,
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    hub_files(&repo, &out);
    assert!(hub.expired.load(SeqCst) >= 1, "no link expired midway");
    assert!(!hub.token_leaked.load(SeqCst));
}
