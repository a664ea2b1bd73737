//! Integrity without false alarms: S3 objects whose ETag is no MD5 of
//! their bytes (SSE-KMS), CRC64NVME checksums, composite checksums and
//! multipart ETags, each verified (a byte flipped on the way is caught)
//! or correctly not called corrupt.
//!
//! s3s-fs serves single-part objects with MD5 ETags and no encryption,
//! checksum type or part layout; an [`S3Front`] in front of it adds what
//! AWS documents for the other cases (`x-amz-server-side-encryption:
//! aws:kms` with an ETag that is not the MD5, `x-amz-checksum-crc64nvme`
//! with `x-amz-checksum-type: FULL_OBJECT`, a composite `x-amz-checksum-sha256`
//! `<base64>-3`, multipart ETags `<md5>-N` in the listing and the answers,
//! and, to a HEAD with `partNumber=n`, that part's `Content-Length` and
//! `x-amz-mp-parts-count`). s3s-fs lists no ETags either; the front
//! lists them as AWS does (the MD5, or the faked ETag). The front computes those values here,
//! independently of the runtime (md-5, sha2, crc-fast). Requests pass
//! through untouched, so s3s still checks every signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use md5::Digest as _;

use crate::download::{MIB, assert_same_tree, download_body, s3_config, sidecar};
use crate::proxy::{Answer, S3Front};
use crate::s3::S3Server;
use crate::util::*;

/// What the front says of one object.
#[derive(Clone, Default)]
struct Faked {
    /// The ETag (unquoted) in the listing and the answers.
    etag: Option<String>,
    /// Extra headers of HEAD and GET answers.
    headers: Vec<(String, String)>,
    /// Headers of HEAD answers only (checksums need the checksum mode).
    head_headers: Vec<(String, String)>,
    /// The upload's part size, for HEAD with `partNumber=n`.
    part_size: Option<u64>,
    /// The last part's size, when the upload's parts were not of one size.
    last_part: Option<u64>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn multipart_etag(data: &[u8], part_size: usize) -> String {
    let mut md5s = Vec::new();
    for part in data.chunks(part_size) {
        md5s.extend(md5::Md5::digest(part));
    }
    format!(
        "{}-{}",
        hex(&md5::Md5::digest(&md5s)),
        data.len().div_ceil(part_size)
    )
}

fn composite_sha256(data: &[u8], part_size: usize) -> String {
    let mut shas = Vec::new();
    for part in data.chunks(part_size) {
        shas.extend(sha2::Sha256::digest(part));
    }
    format!(
        "{}-{}",
        b64(&sha2::Sha256::digest(&shas)),
        data.len().div_ceil(part_size)
    )
}

fn crc64nvme(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    b64(&crc.to_be_bytes())
}

/// A store in front of `server` whose objects under `models/int/` are as
/// `faked` says (by key below the prefix); GET bodies of the object named
/// in `corrupt` get their first byte flipped.
fn front(
    server: &S3Server,
    faked: HashMap<String, Faked>,
    corrupt: Arc<Mutex<Option<String>>>,
) -> S3Front {
    // s3s-fs lists no ETags; AWS lists one for every object: the faked
    // one, else the MD5.
    let dir = server.root.join("models/int");
    let listed: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let etag = match faked.get(&name).and_then(|f| f.etag.clone()) {
                Some(etag) => etag,
                None => hex(&md5::Md5::digest(std::fs::read(dir.join(&name)).unwrap())),
            };
            (name, etag)
        })
        .collect();
    S3Front::start(server.addr, move |request: &str, answer: &mut Answer| {
        let target = request.split(' ').nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if query.contains("list-type=2") {
            let mut body = String::from_utf8(answer.body.clone()).unwrap();
            assert!(!body.contains("<ETag>"), "s3s-fs lists ETags now");
            for (name, etag) in &listed {
                let key = format!("<Key>int/{name}</Key>");
                assert!(body.contains(&key), "{body}");
                body = body.replace(&key, &format!("{key}<ETag>&quot;{etag}&quot;</ETag>"));
            }
            answer.body = body.into_bytes();
            return;
        }
        let Some(name) = path.strip_prefix("/models/int/") else {
            return;
        };
        let Some(f) = faked.get(name) else { return };
        let head = request.starts_with("HEAD ");
        if let Some(etag) = &f.etag {
            answer.set("etag", &format!("\"{etag}\""));
        }
        for (k, v) in &f.headers {
            answer.set(k, v);
        }
        if head && !query.contains("partNumber") {
            for (k, v) in &f.head_headers {
                answer.set(k, v);
            }
        }
        let part_number = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("partNumber="))
            .and_then(|n| n.parse::<u64>().ok());
        if head && let Some(n) = part_number {
            let (Some(part_size), Some(etag)) = (f.part_size, &f.etag) else {
                return;
            };
            let parts: u64 = etag.rsplit('-').next().unwrap().parse().unwrap();
            let size: u64 = answer.header("content-length").unwrap().parse().unwrap();
            let this = match (n < parts, f.last_part) {
                (true, _) => part_size,
                (false, Some(last)) => last,
                (false, None) => size - part_size * (parts - 1),
            };
            answer.set("content-length", &this.to_string());
            answer.set("x-amz-mp-parts-count", &parts.to_string());
        }
        if !head && corrupt.lock().unwrap().as_deref() == Some(name) && !answer.body.is_empty() {
            answer.body[0] ^= 0x01;
        }
    })
}

fn download(sidecar: &Proc, endpoint: &str, out: &std::path::Path) -> Response {
    post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://models/int", out, &s3_config(endpoint), ""),
    )
}

/// Objects encrypted with SSE-KMS: their ETags look like MD5s but are not
/// the MD5 of the bytes (AWS says so with `x-amz-server-side-encryption:
/// aws:kms`, which listings do not carry). They download and land,
/// checked by their CRC64NVME where they have one and by size where
/// they have nothing else; the status says which check each file got.
#[test]
fn sse_kms_objects_are_not_called_corrupt() {
    let server = S3Server::start_unconditional(&temp_dir("int-kms")).unwrap();
    let small = noise(3 * MIB + 7, 11);
    let large = noise(20 * MIB + 5, 12);
    server.put("models", "int/kms-small.bin", &small);
    server.put("models", "int/kms-large.bin", &large);
    server.put("models", "int/plain.json", b"{\"plain\":true}");
    let kms = vec![
        (
            "x-amz-server-side-encryption".to_owned(),
            "aws:kms".to_owned(),
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id".to_owned(),
            "arn:aws:kms:us-east-1:111122223333:key/test".to_owned(),
        ),
    ];
    let faked = HashMap::from([
        (
            "kms-small.bin".to_owned(),
            Faked {
                etag: Some(hex(&md5::Md5::digest(b"not these bytes"))),
                headers: kms.clone(),
                ..Faked::default()
            },
        ),
        (
            "kms-large.bin".to_owned(),
            Faked {
                etag: Some(hex(&md5::Md5::digest(b"nor these"))),
                headers: kms,
                head_headers: vec![
                    ("x-amz-checksum-crc64nvme".to_owned(), crc64nvme(&large)),
                    ("x-amz-checksum-type".to_owned(), "FULL_OBJECT".to_owned()),
                ],
                ..Faked::default()
            },
        ),
    ]);
    let corrupt = Arc::new(Mutex::new(None));
    let front = front(&server, faked, corrupt.clone());
    let sidecar = sidecar();
    let out = temp_dir("int-kms-out");
    let response = download(&sidecar, &front.endpoint(), &out);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&server.root.join("models/int"), &out);
    let verified_by = &response.json()["verified_by"];
    assert_eq!(
        *verified_by,
        serde_json::json!({ "crc64nvme": 1, "etag_md5": 1, "size": 1 }),
        "{}",
        response.text()
    );
    let jobs = get(sidecar.addr, "/v1/downloads").json();
    assert_eq!(jobs["downloads"][0]["verified_by"], *verified_by, "{jobs}");
    let log = sidecar.log();
    assert!(log.contains("SSE-KMS"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("file verified")
            && l.contains("kms-small.bin")
            && l.contains("size")),
        "{log}"
    );

    // The CRC64NVME that replaced the ETag still catches a flipped byte.
    *corrupt.lock().unwrap() = Some("kms-large.bin".to_owned());
    let again = temp_dir("int-kms-out-corrupt");
    let response = download(&sidecar, &front.endpoint(), &again);
    assert_eq!(response.status, 502, "{}", response.text());
    let detail = response.detail();
    assert!(
        detail.contains("kms-large.bin") && detail.contains("CRC-64/NVME mismatch"),
        "{detail}"
    );
    assert!(!again.join("kms-large.bin").exists());
}

/// Multipart objects: a multipart ETag (`<md5 of part MD5s>-3`), a
/// composite SHA-256 (`<base64>-3`, type COMPOSITE) and a full-object
/// CRC64NVME, each verified over the part layout learned from HEAD with
/// `partNumber=1`, with upload parts (7 and 8 MiB) cut otherwise than the
/// download's. The status counts each check; a flipped byte in any of
/// them is a 502 naming the file and the check, and nothing lands. An
/// upload of uneven parts, whose layout cannot be learned from its first
/// and last part, is checked by size and not called corrupt.
#[test]
fn multipart_composite_and_crc64nvme_objects_are_verified() {
    let server = S3Server::start_unconditional(&temp_dir("int-mp")).unwrap();
    let mp = noise(20 * MIB + 3, 21);
    let composite = noise(20 * MIB + 99, 22);
    let crc = noise(17 * MIB + 1, 23);
    server.put("models", "int/mp.bin", &mp);
    server.put("models", "int/composite.bin", &composite);
    server.put("models", "int/crc.bin", &crc);
    server.put("models", "int/config.json", b"{}");
    // Uploaded in parts of 8, 5 and 7 MiB (+5 bytes): a layout of one part
    // size would call it corrupt.
    let uneven = noise(20 * MIB + 5, 24);
    server.put("models", "int/uneven.bin", &uneven);
    let uneven_etag = {
        let cuts = [0, 8 * MIB, 13 * MIB, uneven.len()];
        let mut md5s = Vec::new();
        for w in cuts.windows(2) {
            md5s.extend_from_slice(&md5::Md5::digest(&uneven[w[0]..w[1]]));
        }
        format!("{}-3", hex(&md5::Md5::digest(&md5s)))
    };
    let faked = HashMap::from([
        (
            "uneven.bin".to_owned(),
            Faked {
                etag: Some(uneven_etag),
                part_size: Some(8 * MIB as u64),
                last_part: Some((uneven.len() - 13 * MIB) as u64),
                ..Faked::default()
            },
        ),
        (
            "mp.bin".to_owned(),
            Faked {
                etag: Some(multipart_etag(&mp, 8 * MIB)),
                part_size: Some(8 * MIB as u64),
                ..Faked::default()
            },
        ),
        (
            "composite.bin".to_owned(),
            Faked {
                etag: Some(multipart_etag(&composite, 7 * MIB)),
                part_size: Some(7 * MIB as u64),
                head_headers: vec![
                    (
                        "x-amz-checksum-sha256".to_owned(),
                        composite_sha256(&composite, 7 * MIB),
                    ),
                    ("x-amz-checksum-type".to_owned(), "COMPOSITE".to_owned()),
                ],
                ..Faked::default()
            },
        ),
        (
            "crc.bin".to_owned(),
            Faked {
                etag: Some(multipart_etag(&crc, 8 * MIB)),
                part_size: Some(8 * MIB as u64),
                head_headers: vec![
                    ("x-amz-checksum-crc64nvme".to_owned(), crc64nvme(&crc)),
                    ("x-amz-checksum-type".to_owned(), "FULL_OBJECT".to_owned()),
                ],
                ..Faked::default()
            },
        ),
    ]);
    let corrupt = Arc::new(Mutex::new(None));
    let front = front(&server, faked, corrupt.clone());
    let sidecar = sidecar();
    let out = temp_dir("int-mp-out");
    let response = download(&sidecar, &front.endpoint(), &out);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&server.root.join("models/int"), &out);
    assert_eq!(
        response.json()["verified_by"],
        serde_json::json!({
            "composite_sha256": 1,
            "crc64nvme": 1,
            "etag_md5": 1,
            "etag_multipart_md5": 1,
            "size": 1,
        }),
        "{}",
        response.text()
    );

    for (name, check) in [
        ("mp.bin", "multipart ETag (MD5 of the part MD5s) mismatch"),
        ("composite.bin", "composite SHA-256 mismatch"),
        ("crc.bin", "CRC-64/NVME mismatch"),
    ] {
        *corrupt.lock().unwrap() = Some(name.to_owned());
        let again = temp_dir(&format!("int-mp-corrupt-{name}"));
        let response = download(&sidecar, &front.endpoint(), &again);
        assert_eq!(response.status, 502, "{name}: {}", response.text());
        let detail = response.detail();
        assert!(detail.contains(name) && detail.contains(check), "{detail}");
        assert!(!again.join(name).exists(), "{name} landed");
    }
}
