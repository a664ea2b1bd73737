//! What a file must be, and checking that it is.
//!
//! Every source says how big a file is and usually how to check its bytes:
//! S3's ETag is the MD5 of a single-part object, `x-amz-checksum-*` headers
//! carry CRC32/CRC32C/SHA-1/SHA-256 of the whole object, HuggingFace lists
//! the SHA-256 of LFS files and the git blob SHA-1 of the others. A file
//! lands at its final name only once its size and, where known, its digest
//! match.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use md5::Digest as _;

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

    /// An `x-amz-checksum-<algorithm>` header (base64). Composite
    /// checksums of multipart uploads (`…-N`) are not whole-object ones.
    pub fn from_amz_checksum(algorithm: &str, value: &str) -> Option<Expect> {
        if value.contains('-') {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        match algorithm {
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
        }
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
            Expect::Crc32(_) => Hasher::Crc32(crc32fast::Hasher::new()),
            Expect::Crc32c(_) => Hasher::Crc32c(0),
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
