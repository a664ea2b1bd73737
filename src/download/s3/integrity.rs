//! Which check an object's bytes get, without false alarms.
//!
//! - A single-part ETag is the MD5 of the content only when the object is
//!   not SSE-KMS, DSSE-KMS or SSE-C encrypted; SSE-S3 (`AES256`) ETags are
//!   MD5s. Listings carry no encryption headers, so an MD5-shaped ETag
//!   from a listing is trusted only once an answer about the object
//!   (the download's own GETs: no extra request; or a HEAD, when no GET
//!   was needed in this run) showed no such encryption. Otherwise the
//!   file falls back to the object's checksum, or its size.
//! - Objects whose listing says nothing checkable (no ETag, a multipart
//!   ETag `<md5>-N`) get a HEAD with `x-amz-checksum-mode: ENABLED`: a
//!   whole-object `x-amz-checksum-*` (CRC64NVME, the AWS default since
//!   late 2024, CRC32/CRC32C as FULL_OBJECT, SHA-1/SHA-256) is used as is;
//!   a composite one (`<base64>-N`) or a multipart ETag needs the part
//!   layout, which HEADs with `partNumber=1` and of the last part give
//!   (the first's `Content-Length` is the part size, `x-amz-mp-parts-count`
//!   the number of parts; the last must be what parts of that one size
//!   leave, or the layout is taken for unknown: uploads with uneven parts
//!   exist, and a wrong layout would call a good file corrupt).
//!
//! Why the GET answers and not a HEAD of every object: they cost no
//! request at all, while a HEAD per object with an MD5-shaped ETag costs
//! a round trip per file (estimated, not measured: a 1,100-file prefix at
//! 8 in flight and ~30 ms each adds about 4 s to every download).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Bucket;
use super::errors::{Failure, S3Error};
use crate::download::error::DownloadError;
use crate::download::fetch::RemoteFile;
use crate::download::transient_status;
use crate::download::verify::{Algorithm, Expect, Layout};
use crate::net::Response;

/// What the GET answers of this run said of each object (by key): whether
/// its ETag is no MD5 of the content.
#[derive(Debug, Default)]
pub(super) struct Seen(Mutex<HashMap<String, bool>>);

impl Seen {
    /// Records what a GET answer for `key` says.
    pub(super) fn note(&self, key: &str, response: &Response<'_>) {
        let hides = etag_hides_md5(response);
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(key) != Some(&hides) {
            seen.insert(key.to_owned(), hides);
        }
    }

    fn get(&self, key: &str) -> Option<bool> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }
}

/// Whether the store says it encrypted the object so that its ETag is no
/// MD5 of the content: SSE-KMS (`aws:kms`), DSSE-KMS (`aws:kms:dsse`) or
/// SSE-C (a customer algorithm).
pub(super) fn etag_hides_md5(response: &Response<'_>) -> bool {
    let kms = response
        .header("x-amz-server-side-encryption")
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("aws:kms"));
    kms || response
        .header("x-amz-server-side-encryption-customer-algorithm")
        .is_some()
}

/// What a HEAD answer offers to check an object with.
#[derive(Debug)]
pub(super) struct Claims {
    pub(super) size: u64,
    pub(super) etag: Option<String>,
    /// The ETag is no MD5 of the content (see [`etag_hides_md5`]).
    pub(super) hides_md5: bool,
    /// A whole-object checksum.
    full: Option<Expect>,
    /// A composite checksum: algorithm, checksum of the part checksums,
    /// number of parts.
    composite: Option<(Algorithm, Vec<u8>, u32)>,
}

impl Claims {
    pub(super) fn parse(response: &Response<'_>) -> Claims {
        let size = response
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // An object carries one additional checksum.
        let algorithms = ["crc64nvme", "sha256", "sha1", "crc32c", "crc32"];
        let value = |a: &str| response.header(&format!("x-amz-checksum-{a}"));
        Claims {
            size,
            etag: response.header("etag").map(str::to_owned),
            hides_md5: etag_hides_md5(response),
            full: algorithms
                .iter()
                .find_map(|a| Expect::from_amz_checksum(a, value(a)?)),
            composite: algorithms
                .iter()
                .find_map(|a| Expect::composite_amz_checksum(a, value(a)?)),
        }
    }

    /// The best check that needs no part layout: a whole-object checksum,
    /// else a single-part ETag that is an MD5, else the size.
    pub(super) fn whole(&self) -> Expect {
        if let Some(full) = &self.full {
            return full.clone();
        }
        match &self.etag {
            Some(etag) if !self.hides_md5 => Expect::from_etag(etag),
            _ => Expect::SizeOnly,
        }
    }

    /// A check over the parts, waiting for their layout: a composite
    /// checksum, else a multipart ETag that is no encryption's.
    fn per_part(&self) -> Option<(Algorithm, Vec<u8>, u32)> {
        if self.full.is_some() {
            return None;
        }
        self.composite.clone().or_else(|| {
            let (md5, parts) = Expect::multipart_etag(self.etag.as_deref()?)?;
            (!self.hides_md5).then(|| (Algorithm::Md5, md5.to_vec(), parts))
        })
    }
}

impl Bucket {
    /// Listings of some stores carry no ETag, and multipart ETags check
    /// nothing without the part layout: HEADs (8 at a time) fill those in.
    pub(super) fn complete_metadata(&self, files: &mut [RemoteFile]) -> Result<(), DownloadError> {
        let needy: Vec<usize> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.expect == Expect::SizeOnly)
            .map(|(i, _)| i)
            .collect();
        if needy.is_empty() {
            return Ok(());
        }
        let learned: Vec<_> = std::thread::scope(|scope| {
            let chunks: Vec<&[usize]> = needy.chunks(needy.len().div_ceil(8)).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let files = &*files;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| self.learn(&files[i].locator))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (&i, learned) in needy.iter().zip(learned) {
            if let Some((claims, expect)) = learned? {
                let file = &mut files[i];
                file.version = match &claims.etag {
                    Some(etag) => format!("etag:{etag}"),
                    None => format!("size:{}", claims.size),
                };
                file.expect = expect;
            }
        }
        Ok(())
    }

    /// The check `file` gets now that its bytes are on disk: an ETag from
    /// the listing stands as an MD5 only if the object's answers show no
    /// encryption that makes it something else.
    pub(super) fn settle_check(&self, file: &RemoteFile) -> Result<Expect, DownloadError> {
        if !matches!(file.expect, Expect::Md5(_)) || self.seen.get(&file.locator) == Some(false) {
            return Ok(file.expect.clone());
        }
        // A GET showed SSE-KMS/SSE-C, or no GET was needed in this run
        // (every part resumed): the HEAD says, and offers a checksum.
        let Some((claims, expect)) = self.learn(&file.locator)? else {
            return Ok(match self.seen.get(&file.locator) {
                Some(true) => Expect::SizeOnly,
                _ => file.expect.clone(),
            });
        };
        if !claims.hides_md5 {
            return Ok(file.expect.clone());
        }
        tracing::info!(
            file = %file.rel,
            check = expect.id(),
            "the store encrypts this object with SSE-KMS or SSE-C, so its ETag is no MD5 of the content; checking it otherwise"
        );
        Ok(expect)
    }

    /// What the HEAD of `key` offers, and the best check it allows
    /// (learning the part layout if that check needs it); `None` when the
    /// object does not exist.
    fn learn(&self, key: &str) -> Result<Option<(Claims, Expect)>, DownloadError> {
        let checksums = [("x-amz-checksum-mode".to_owned(), "ENABLED".to_owned())];
        let Some(claims) = self.head_with(key, "", &checksums, Claims::parse)? else {
            return Ok(None);
        };
        let mut expect = claims.whole();
        if let Some((algorithm, digest, parts)) = claims.per_part() {
            match self.layout(key, claims.size, parts)? {
                Some(layout) => {
                    expect = Expect::Parts {
                        algorithm,
                        digest,
                        layout,
                    };
                }
                None => tracing::info!(
                    store = %self.name,
                    key,
                    parts,
                    check = expect.id(),
                    "the part layout of this multipart object is unknown (HEAD with partNumber=1 told nothing consistent); checking what is left"
                ),
            }
        }
        Ok(Some((claims, expect)))
    }

    /// The part layout of a multipart object of `size` bytes in `parts`
    /// parts, from the HEAD of its first part.
    fn layout(&self, key: &str, size: u64, parts: u32) -> Result<Option<Layout>, DownloadError> {
        let first = self.head_with(key, "?partNumber=1", &[], |response| {
            let part_size = response
                .header("content-length")
                .and_then(|v| v.parse::<u64>().ok());
            let count = response
                .header("x-amz-mp-parts-count")
                .and_then(|v| v.trim().parse::<u32>().ok());
            part_size.zip(count)
        });
        // A store that refuses `partNumber` leaves the layout unknown; the
        // download goes on with the checks that remain.
        let first = first.unwrap_or_else(|e| {
            tracing::debug!(key, error = %e, "HEAD with partNumber=1 failed");
            None
        });
        let Some(layout) = (match first.flatten() {
            Some((part_size, count)) if count == parts => Layout::new(size, part_size, parts),
            _ => None,
        }) else {
            return Ok(None);
        };
        // Uploads with parts of uneven size exist: the last part must be
        // exactly what a uniform layout leaves, or the layout is unknown
        // (a good file must not be called corrupt over a wrong layout).
        if parts > 1 {
            let expected = size - layout.part_size * u64::from(parts - 1);
            let query = format!("?partNumber={parts}");
            let last = self.head_with(key, &query, &[], |response| {
                response
                    .header("content-length")
                    .and_then(|v| v.parse::<u64>().ok())
            });
            if last.ok().flatten().flatten() != Some(expected) {
                tracing::info!(
                    key,
                    "the parts of this multipart object are not of one size; its multipart checks are skipped"
                );
                return Ok(None);
            }
        }
        Ok(Some(layout))
    }

    /// A HEAD of `key` (`query` after its path), retried while it fails
    /// in ways that pass; `None` when the object does not exist.
    pub(super) fn head_with<T>(
        &self,
        key: &str,
        query: &str,
        headers: &[(String, String)],
        read: impl Fn(&Response<'_>) -> T,
    ) -> Result<Option<T>, DownloadError> {
        let path = format!("{}{query}", self.object_path(key));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reason = match self.send("HEAD", &path, headers) {
                Ok(response) if matches!(response.status, 200 | 206) => {
                    return Ok(Some(read(&response)));
                }
                Ok(response) if response.status == 404 => return Ok(None),
                Ok(response) if transient_status(response.status) => {
                    format!("HTTP {}", response.status)
                }
                Ok(response) => {
                    let error = S3Error {
                        code: format!("HTTP {}", response.status),
                        ..S3Error::default()
                    };
                    return Err(self.error(response.status, &error, key));
                }
                Err(Failure::Transient(reason)) => reason,
                Err(Failure::Fatal(e)) => return Err(e),
            };
            if attempt >= self.retry.attempts {
                return Err(DownloadError::Exhausted {
                    what: format!("HEAD {key}{query}"),
                    attempts: attempt,
                    last: reason,
                });
            }
            std::thread::sleep(self.retry.backoff(attempt));
        }
    }
}
