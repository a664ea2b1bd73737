//! ModelScope downloads (`ms://owner/name`), by the API and the `download`
//! command, from a local hub that the real ModelScope SDK (PyPI's
//! `modelscope`) downloads from too: where both agree on the same server,
//! the server is shaped like the real one.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering::SeqCst;

use crate::download::{MIB, download_body, sidecar};
use crate::hub::HubFile;
use crate::modelscope::{LISTING_CAP, ModelScope, MsRepo};
use crate::util::*;

fn file(path: &str, data: Vec<u8>, lfs: bool) -> HubFile {
    HubFile {
        path: path.into(),
        data,
        lfs,
        corrupt: false,
    }
}

fn ms_repo(token: Option<&str>) -> MsRepo {
    MsRepo {
        id: if token.is_some() {
            "acme/private-qwen".into()
        } else {
            "acme/tiny-qwen".into()
        },
        revisions: vec!["master".into(), "v1.0".into()],
        token: token.map(str::to_owned),
        files: vec![
            file("config.json", br#"{"model_type":"qwen3"}"#.to_vec(), false),
            file("tokenizer/vocab.json", noise(40_000, 11), false),
            file("model.safetensors", noise(24 * MIB + 5, 12), true),
            file("weights with space.bin", noise(5000, 13), true),
            file("docs/deep/notes.md", b"# notes\n".to_vec(), false),
        ],
    }
}

fn assert_files(repo: &MsRepo, out: &Path) {
    for file in &repo.files {
        assert_eq!(
            std::fs::read(out.join(&file.path)).ok(),
            Some(file.data.clone()),
            "{} in {}",
            file.path,
            out.display()
        );
    }
}

/// The real SDK's `snapshot_download` of `repo` into `out`, configured
/// the way its users do: `MODELSCOPE_ENDPOINT`, `MODELSCOPE_API_TOKEN`.
fn sdk_download(
    hub: &ModelScope,
    repo: &str,
    token: Option<&str>,
    allow: Option<&str>,
    out: &Path,
) -> Output {
    let python = std::env::var("MATRIXINFER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let home = temp_dir("ms-sdk-home");
    let script = "import sys\n\
        from modelscope import snapshot_download\n\
        allow = [sys.argv[3]] if sys.argv[3] else None\n\
        snapshot_download(sys.argv[1], local_dir=sys.argv[2], allow_patterns=allow, max_workers=4)\n";
    let mut command = Command::new(python);
    command
        .args(["-c", script, repo])
        .arg(out)
        .arg(allow.unwrap_or(""))
        .env("HOME", &home)
        .env("MODELSCOPE_CACHE", home.join("cache"))
        .env("MODELSCOPE_ENDPOINT", hub.endpoint())
        .env_remove("MODELSCOPE_API_TOKEN")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("MODELSCOPE_API_TOKEN", token);
    }
    command.output_tied()
}

fn sdk_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `ms://owner/name` and `@revision`, by the API and the `download`
/// command, land the same files as the SDK's own download; LFS files come
/// from the CDN, and the token never reaches it.
#[test]
fn modelscope_downloads_match_the_real_sdk() {
    let repo = ms_repo(None);
    let hub = ModelScope::start(vec![repo.clone()]);
    let sidecar = sidecar();
    let config =
        serde_json::json!({ "ms_endpoint": hub.endpoint(), "ms_token": "ms_SECRET_TOKEN" })
            .to_string();
    for (i, source) in ["ms://acme/tiny-qwen", "ms://acme/tiny-qwen@v1.0"]
        .iter()
        .enumerate()
    {
        let out = temp_dir(&format!("ms-api-{i}"));
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body(source, &out, &config, ""),
        );
        assert_eq!(response.status, 200, "{source}: {}", response.text());
        assert_files(&repo, &out);
    }
    assert!(
        hub.cdn_requests.load(SeqCst) > 0,
        "LFS bytes come from the CDN"
    );
    assert!(!hub.token_leaked.load(SeqCst), "the token reached the CDN");
    let statuses = get(sidecar.addr, "/v1/downloads").text();
    assert!(!statuses.contains("ms_SECRET_TOKEN"), "{statuses}");
    assert!(!sidecar.log().contains("ms_SECRET_TOKEN"));

    // The endpoint from the SDK's own variable, by the `download` command.
    for (i, source) in ["ms://acme/tiny-qwen", "ms://acme/tiny-qwen@v1.0"]
        .iter()
        .enumerate()
    {
        let out = temp_dir(&format!("ms-command-{i}"));
        let output = Command::new(BIN)
            .args(["download", "--source", source, "--output-dir"])
            .arg(&out)
            .env("MODELSCOPE_ENDPOINT", hub.endpoint())
            .stdin(Stdio::null())
            .output_tied();
        assert!(
            output.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_files(&repo, &out);
    }

    let out = temp_dir("ms-sdk");
    let output = sdk_download(&hub, "acme/tiny-qwen", None, None, &out);
    assert!(output.status.success(), "{}", sdk_output(&output));
    assert_files(&repo, &out);
}

/// A private repository: the token from `ms_token`, `MS_TOKEN` or the
/// SDK's `MODELSCOPE_API_TOKEN`; without it a 403 that names `ms_token`.
#[test]
fn modelscope_private_repository_needs_its_token() {
    let repo = ms_repo(Some("ms-private-token"));
    let hub = ModelScope::start(vec![repo.clone()]);
    let source = "ms://acme/private-qwen";
    let endpoint_only = serde_json::json!({ "ms_endpoint": hub.endpoint() }).to_string();
    let sidecar = sidecar();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(source, &temp_dir("ms-no-token"), &endpoint_only, ""),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(
        response.detail().contains("ms_token"),
        "{}",
        response.detail()
    );
    let wrong =
        serde_json::json!({ "ms_endpoint": hub.endpoint(), "ms_token": "guess" }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(source, &temp_dir("ms-wrong-token"), &wrong, ""),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    let right =
        serde_json::json!({ "ms_endpoint": hub.endpoint(), "ms_token": "ms-private-token" })
            .to_string();
    let out = temp_dir("ms-config-token");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(source, &out, &right, ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_files(&repo, &out);

    for variable in ["MS_TOKEN", "MODELSCOPE_API_TOKEN"] {
        let sidecar = Sidecar::new("vllm", closed_port())
            .workers(1)
            .env(variable, "ms-private-token")
            .env("MODELSCOPE_ENDPOINT", &hub.endpoint())
            .start();
        let out = temp_dir(&format!("ms-env-token-{variable}"));
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body(source, &out, "", ""),
        );
        assert_eq!(response.status, 200, "{variable}: {}", response.text());
        assert_files(&repo, &out);
        assert!(!sidecar.log().contains("ms-private-token"), "{variable}");
    }
    assert!(!hub.token_leaked.load(SeqCst), "the token reached the CDN");

    // The SDK meets the same door.
    let output = sdk_download(
        &hub,
        "acme/private-qwen",
        None,
        None,
        &temp_dir("ms-sdk-401"),
    );
    assert!(!output.status.success(), "{}", sdk_output(&output));
    let out = temp_dir("ms-sdk-token");
    let output = sdk_download(
        &hub,
        "acme/private-qwen",
        Some("ms-private-token"),
        None,
        &out,
    );
    assert!(output.status.success(), "{}", sdk_output(&output));
    assert_files(&repo, &out);
}

/// The revision: the source's `@revision`, then `ms_revision`, then
/// `MS_REVISION`, then `master`; unknown revisions and repositories are
/// 404, malformed `ms://` sources 400.
#[test]
fn modelscope_revisions_and_missing_repositories() {
    let repo = ms_repo(None);
    let hub = ModelScope::start(vec![repo.clone()]);
    let sidecar = Sidecar::new("vllm", closed_port())
        .workers(1)
        .env("MS_REVISION", "no-such-revision")
        .env("MODELSCOPE_DOMAIN", &hub.endpoint())
        .start();
    let download = |source: &str, config: serde_json::Value, name: &str| {
        let out = temp_dir(name);
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body(source, &out, &config.to_string(), ""),
        );
        (response, out)
    };
    let (response, _) = download("ms://acme/tiny-qwen", serde_json::json!({}), "ms-env-rev");
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.detail().contains("no-such-revision"),
        "{}",
        response.detail()
    );
    let (response, out) = download(
        "ms://acme/tiny-qwen",
        serde_json::json!({ "ms_revision": "v1.0" }),
        "ms-config-rev",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_files(&repo, &out);
    let (response, out) = download(
        "ms://acme/tiny-qwen@master",
        serde_json::json!({ "ms_revision": "no-such" }),
        "ms-source-rev",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_files(&repo, &out);
    let (response, _) = download(
        "ms://acme/absent@master",
        serde_json::json!({}),
        "ms-absent",
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.detail().contains("model acme/absent not found"),
        "{}",
        response.detail()
    );
    for bad in ["ms://", "ms://qwen", "ms://a/b/c", "ms://acme/tiny-qwen@"] {
        let (response, _) = download(bad, serde_json::json!({}), "ms-bad");
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
        assert!(
            response.detail().contains("ms://"),
            "{bad}: {}",
            response.detail()
        );
    }
}

/// A file whose bytes do not match the listed SHA-256 never lands under
/// its name; the SDK refuses it too.
#[test]
fn modelscope_corrupt_file_is_rejected() {
    let mut repo = ms_repo(None);
    repo.files[2].corrupt = true;
    let hub = ModelScope::start(vec![repo.clone()]);
    let sidecar = sidecar();
    let out = temp_dir("ms-corrupt");
    let config = serde_json::json!({ "ms_endpoint": hub.endpoint() }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("ms://acme/tiny-qwen", &out, &config, ""),
    );
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response
            .detail()
            .contains("model.safetensors: SHA-256 mismatch"),
        "{}",
        response.detail()
    );
    assert!(!out.join("model.safetensors").exists());

    let out = temp_dir("ms-sdk-corrupt");
    let output = sdk_download(&hub, "acme/tiny-qwen", None, None, &out);
    let said = sdk_output(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("mismatch"), "{said}");
}

/// A repository larger than one listing (the hub cuts `repo/files` at
/// 3,000 entries without saying so) is walked directory by directory:
/// a file past the cut is found, by the runtime and by the SDK alike.
#[test]
fn modelscope_listing_cut_at_the_cap_is_walked() {
    let mut files: Vec<HubFile> = (0..LISTING_CAP)
        .map(|i| file(&format!("shards/{}/{i}.txt", i % 7), vec![b'x'; 3], false))
        .collect();
    files.push(file(
        "tokenizer/deep/tokenizer.json",
        br#"{"version":"1.0"}"#.to_vec(),
        false,
    ));
    let repo = MsRepo {
        id: "acme/many-files".into(),
        revisions: vec!["master".into()],
        token: None,
        files,
    };
    let hub = ModelScope::start(vec![repo]);
    let sidecar = sidecar();
    let out = temp_dir("ms-walk");
    let config = serde_json::json!({
        "ms_endpoint": hub.endpoint(),
        "allow_patterns": ["tokenizer/*"],
    })
    .to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("ms://acme/many-files", &out, &config, ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let landed: Vec<String> = files_below(&out)
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert_eq!(landed, ["tokenizer/deep/tokenizer.json"]);
    assert!(hub.listings.load(SeqCst) > 1, "one listing cannot hold it");

    let out = temp_dir("ms-sdk-walk");
    let output = sdk_download(&hub, "acme/many-files", None, Some("tokenizer/*"), &out);
    assert!(output.status.success(), "{}", sdk_output(&output));
    assert!(out.join("tokenizer/deep/tokenizer.json").exists());
}
