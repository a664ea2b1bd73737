//! What a file must be, and checking that it is.
//!
//! Every source says how big a file is and usually how to check its bytes:
//! S3's ETag is the MD5 of a single-part object (unless SSE-KMS or SSE-C
//! encrypted it) and, for a multipart one, the MD5 of its parts' MD5s;
//! `x-amz-checksum-*` headers carry CRC32/CRC32C/CRC64NVME/SHA-1/SHA-256
//! of the whole object or, `…-N`, of its parts' checksums (composite);
//! HuggingFace lists the SHA-256 of LFS files and the git blob SHA-1 of the
//! others. A file lands at its final name only once its size and, where
//! known, its digest match.
//!
//! Digests of parts (`parts`) are computed as the bytes stream by, part
//! after part: only the parts' digests are kept, never their bytes.

mod parts;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use md5::Digest as _;
pub use parts::{Algorithm, Layout};

/// What the bytes of a file must hash to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// Only the size is known (multipart S3 objects without checksums).
    #[default]
    SizeOnly,
    /// MD5 (S3 single-part ETag).
    Md5([u8; 16]),
    /// SHA-256 (HuggingFace LFS, `x-amz-checksum-sha256`).
    Sha256([u8; 32]),
    /// SHA-1 (`x-amz-checksum-sha1`).
    Sha1([u8; 20]),
    /// The git blob id: SHA-1 of `blob <size>\0` + content.
    GitBlob([u8; 20]),
    /// CRC-32 (`x-amz-checksum-crc32`).
    Crc32(u32),
    /// CRC-32C (`x-amz-checksum-crc32c`).
    Crc32c(u32),
    /// CRC-64/NVME (`x-amz-checksum-crc64nvme`, the default of new AWS
    /// objects).
    Crc64Nvme(u64),
    /// A digest of the parts' digests, in order, over a known part
    /// layout: a multipart ETag (MD5) or a composite `x-amz-checksum-*`.
    Parts {
        /// The digest of each part and of their concatenation.
        algorithm: Algorithm,
        /// The digest of the concatenated part digests.
        digest: Vec<u8>,
        /// How the object was cut into parts.
        layout: Layout,
    },
}

impl Expect {
    /// An S3 ETag: the MD5 of a single-part upload; a multipart ETag
    /// (`…-N`) says nothing checkable without the part size.
    pub fn from_etag(etag: &str) -> Expect {
        let etag = etag.trim_matches('"');
        match hex_array::<16>(etag) {
            Some(md5) => Expect::Md5(md5),
            None => Expect::SizeOnly,
        }
    }

    /// A multipart ETag (`"<md5 of the part MD5s>-N"`): the digest and N.
    pub fn multipart_etag(etag: &str) -> Option<([u8; 16], u32)> {
        let (md5, parts) = etag.trim_matches('"').split_once('-')?;
        Some((
            hex_array::<16>(md5)?,
            parts.parse().ok().filter(|&n| n > 0)?,
        ))
    }

    /// A composite `x-amz-checksum-<algorithm>` header (`<base64>-N`):
    /// the algorithm, the checksum of the part checksums, and N.
    pub fn composite_amz_checksum(
        algorithm: &str,
        value: &str,
    ) -> Option<(Algorithm, Vec<u8>, u32)> {
        let (digest, parts) = value.split_once('-')?;
        let algorithm = Algorithm::from_amz(algorithm)?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(digest)
            .ok()
            .filter(|d| d.len() == algorithm.digest_len())?;
        Some((algorithm, digest, parts.parse().ok().filter(|&n| n > 0)?))
    }

    /// An `x-amz-checksum-<algorithm>` header (base64) of the whole object.
    /// Composite checksums of multipart uploads (`…-N`) are not
    /// whole-object ones (see [`Expect::composite_amz_checksum`]).
    pub fn from_amz_checksum(algorithm: &str, value: &str) -> Option<Expect> {
        if value.contains('-') {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        match algorithm {
            "crc64nvme" => bytes
                .try_into()
                .ok()
                .map(|b| Expect::Crc64Nvme(u64::from_be_bytes(b))),
            "sha256" => bytes.try_into().ok().map(Expect::Sha256),
            "sha1" => bytes.try_into().ok().map(Expect::Sha1),
            "crc32" => bytes
                .try_into()
                .ok()
                .map(|b| Expect::Crc32(u32::from_be_bytes(b))),
            "crc32c" => bytes
                .try_into()
                .ok()
                .map(|b| Expect::Crc32c(u32::from_be_bytes(b))),
            _ => None,
        }
    }

    /// A hex digest of the given kind.
    pub fn sha256_hex(hex: &str) -> Option<Expect> {
        hex_array::<32>(hex).map(Expect::Sha256)
    }

    /// A git blob id in hex.
    pub fn git_blob_hex(hex: &str) -> Option<Expect> {
        hex_array::<20>(hex).map(Expect::GitBlob)
    }

    /// The name of the check, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Expect::SizeOnly => "size",
            Expect::Md5(_) => "MD5 (ETag)",
            Expect::Sha256(_) => "SHA-256",
            Expect::Sha1(_) => "SHA-1",
            Expect::GitBlob(_) => "git blob SHA-1",
            Expect::Crc32(_) => "CRC-32",
            Expect::Crc32c(_) => "CRC-32C",
            Expect::Crc64Nvme(_) => "CRC-64/NVME",
            Expect::Parts { algorithm, .. } => algorithm.per_part_name(),
        }
    }

    /// A short stable identifier of the kind of check, for the status API
    /// and the logs (`etag_md5`, `crc64nvme`, `composite_sha256`, …).
    pub fn id(&self) -> &'static str {
        match self {
            Expect::SizeOnly => "size",
            Expect::Md5(_) => "etag_md5",
            Expect::Sha256(_) => "sha256",
            Expect::Sha1(_) => "sha1",
            Expect::GitBlob(_) => "git_blob_sha1",
            Expect::Crc32(_) => "crc32",
            Expect::Crc32c(_) => "crc32c",
            Expect::Crc64Nvme(_) => "crc64nvme",
            Expect::Parts { algorithm, .. } => algorithm.per_part_id(),
        }
    }

    /// Whether the check comes from an S3 ETag, which is no digest of the
    /// content when the store encrypted it with SSE-KMS or SSE-C.
    pub fn is_from_etag(&self) -> bool {
        matches!(
            self,
            Expect::Md5(_)
                | Expect::Parts {
                    algorithm: Algorithm::Md5,
                    ..
                }
        )
    }

    /// A stable text form, recorded once a file is verified.
    pub fn key(&self) -> String {
        match self {
            Expect::SizeOnly => "size".into(),
            Expect::Md5(d) => format!("md5:{}", hex(d)),
            Expect::Sha256(d) => format!("sha256:{}", hex(d)),
            Expect::Sha1(d) => format!("sha1:{}", hex(d)),
            Expect::GitBlob(d) => format!("gitblob:{}", hex(d)),
            Expect::Crc32(c) => format!("crc32:{c:08x}"),
            Expect::Crc32c(c) => format!("crc32c:{c:08x}"),
            Expect::Crc64Nvme(c) => format!("crc64nvme:{c:016x}"),
            Expect::Parts {
                algorithm,
                digest,
                layout,
            } => format!(
                "{}:{}/{}x{}",
                algorithm.per_part_id(),
                hex(digest),
                layout.parts,
                layout.part_size
            ),
        }
    }

    /// A hasher for a file of `size` bytes, or `None` when there is
    /// nothing to hash.
    pub fn hasher(&self, size: u64) -> Option<Hasher> {
        Some(match self {
            Expect::SizeOnly => return None,
            Expect::Md5(_) => Hasher::Md5(md5::Md5::new()),
            Expect::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Expect::Sha1(_) => Hasher::Sha1(sha1::Sha1::new()),
            Expect::GitBlob(_) => {
                let mut sha = sha1::Sha1::new();
                sha.update(format!("blob {size}\0").as_bytes());
                Hasher::Sha1(sha)
            }
            Expect::Crc32(_) => Algorithm::Crc32.hasher(),
            Expect::Crc32c(_) => Algorithm::Crc32c.hasher(),
            Expect::Crc64Nvme(_) => Algorithm::Crc64Nvme.hasher(),
            Expect::Parts {
                algorithm, layout, ..
            } => Hasher::Parts(Box::new(parts::PartHasher::new(*algorithm, *layout))),
        })
    }

    /// Whether `digest` (from [`Hasher::finish`]) is what was expected;
    /// `Err` carries the expected and actual values for the message.
    pub fn check(&self, digest: &[u8]) -> Result<(), (String, String)> {
        let expected: Vec<u8> = match self {
            Expect::SizeOnly => return Ok(()),
            Expect::Md5(d) => d.to_vec(),
            Expect::Sha256(d) => d.to_vec(),
            Expect::Sha1(d) | Expect::GitBlob(d) => d.to_vec(),
            Expect::Crc32(c) | Expect::Crc32c(c) => c.to_be_bytes().to_vec(),
            Expect::Crc64Nvme(c) => c.to_be_bytes().to_vec(),
            Expect::Parts { digest, .. } => digest.clone(),
        };
        if expected == digest {
            Ok(())
        } else {
            Err((hex(&expected), hex(digest)))
        }
    }
}

/// A running digest.
#[derive(Clone)]
pub enum Hasher {
    /// MD5.
    Md5(md5::Md5),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-1 (also the git blob id, primed with its header).
    Sha1(sha1::Sha1),
    /// CRC-32.
    Crc32(crc32fast::Hasher),
    /// CRC-32C.
    Crc32c(u32),
    /// CRC-64/NVME.
    Crc64Nvme(crc_fast::Digest),
    /// Digests of parts, then of their concatenation.
    Parts(Box<parts::PartHasher>),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Crc32(h) => h.update(bytes),
            Hasher::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Hasher::Crc64Nvme(h) => h.update(bytes),
            Hasher::Parts(h) => h.update(bytes),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            Hasher::Crc64Nvme(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Parts(h) => h.finish(),
        }
    }
}

/// Hashes a whole file.
pub fn hash_file(path: &Path, mut hasher: Hasher) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(expect: &Expect, data: &[u8]) -> Vec<u8> {
        let mut h = expect.hasher(data.len() as u64).unwrap();
        h.update(data);
        h.finish()
    }

    #[test]
    fn known_vectors() {
        // Independent values: `printf hello | md5sum`, `sha256sum`,
        // `git hash-object`, and the S3 documentation's base64 forms.
        let md5 = Expect::from_etag("\"5d41402abc4b2a76b9719d911017c592\"");
        assert_eq!(
            md5,
            Expect::Md5(hex_array("5d41402abc4b2a76b9719d911017c592").unwrap())
        );
        assert!(md5.check(&digest(&md5, b"hello")).is_ok());
        let sha =
            Expect::sha256_hex("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
                .unwrap();
        assert!(sha.check(&digest(&sha, b"hello")).is_ok());
        let blob = Expect::git_blob_hex("b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0").unwrap();
        assert!(blob.check(&digest(&blob, b"hello")).is_ok());
        let crc = Expect::from_amz_checksum("crc32", "NhCmhg==").unwrap();
        assert!(
            crc.check(&digest(&crc, b"hello")).is_ok(),
            "{:?}",
            digest(&crc, b"hello")
        );
        let crc32c = Expect::from_amz_checksum("crc32c", "mnG7TA==").unwrap();
        assert!(
            crc32c.check(&digest(&crc32c, b"hello")).is_ok(),
            "{}",
            hex(&digest(&crc32c, b"hello"))
        );
        let sha_b64 =
            Expect::from_amz_checksum("sha256", "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=")
                .unwrap();
        assert_eq!(sha_b64, sha);
        let (expected, actual) = sha.check(&digest(&sha, b"hellO")).unwrap_err();
        assert_ne!(expected, actual);
    }

    #[test]
    fn uncheckable_etags_and_checksums() {
        assert_eq!(
            Expect::from_etag("\"d41d8cd98f00b204e9800998ecf8427e-3\""),
            Expect::SizeOnly
        );
        assert_eq!(Expect::from_etag("W/\"abc\""), Expect::SizeOnly);
        assert_eq!(Expect::from_amz_checksum("crc32", "NhCmhg==-2"), None);
        assert_eq!(Expect::from_amz_checksum("md4", "x"), None);
        assert!(Expect::SizeOnly.hasher(5).is_none());
    }
}
