//! Digests of multipart objects: the algorithms S3 computes per part, the
//! part layout of an upload, and a hasher that digests each part as its
//! bytes stream by and then the concatenation of those digests (a
//! multipart ETag is the MD5 of the parts' MD5s; a composite checksum the
//! checksum of the parts' checksums). Memory: one digest per part.

use md5::Digest as _;

use super::Hasher;

/// A digest S3 computes of objects or of their parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (ETags).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-1.
    Sha1,
    /// CRC-32.
    Crc32,
    /// CRC-32C.
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
}

impl Algorithm {
    /// The algorithm of an `x-amz-checksum-<name>` header.
    pub fn from_amz(name: &str) -> Option<Algorithm> {
        Some(match name {
            "sha256" => Algorithm::Sha256,
            "sha1" => Algorithm::Sha1,
            "crc32" => Algorithm::Crc32,
            "crc32c" => Algorithm::Crc32c,
            "crc64nvme" => Algorithm::Crc64Nvme,
            _ => return None,
        })
    }

    /// Bytes in a digest.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
            Algorithm::Sha1 => 20,
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
        }
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Crc64Nvme => {
                Hasher::Crc64Nvme(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
            }
        }
    }

    /// The per-part check's name, for messages.
    pub(super) fn per_part_name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "multipart ETag (MD5 of the part MD5s)",
            Algorithm::Sha256 => "composite SHA-256",
            Algorithm::Sha1 => "composite SHA-1",
            Algorithm::Crc32 => "composite CRC-32",
            Algorithm::Crc32c => "composite CRC-32C",
            Algorithm::Crc64Nvme => "composite CRC-64/NVME",
        }
    }

    /// The per-part check's identifier (see [`super::Expect::id`]).
    pub(super) fn per_part_id(self) -> &'static str {
        match self {
            Algorithm::Md5 => "etag_multipart_md5",
            Algorithm::Sha256 => "composite_sha256",
            Algorithm::Sha1 => "composite_sha1",
            Algorithm::Crc32 => "composite_crc32",
            Algorithm::Crc32c => "composite_crc32c",
            Algorithm::Crc64Nvme => "composite_crc64nvme",
        }
    }
}

/// How an upload cut an object: `parts` parts, all of `part_size` bytes
/// but the last (as the AWS SDKs and CLI upload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes in every part but the last.
    pub part_size: u64,
    /// Number of parts.
    pub parts: u32,
}

impl Layout {
    /// The layout of an object of `size` bytes whose first part has
    /// `part_size` bytes, if `parts` such parts (the last one shorter or
    /// equal) make exactly `size`; `None` when they cannot.
    pub fn new(size: u64, part_size: u64, parts: u32) -> Option<Layout> {
        if part_size == 0 || parts == 0 {
            return None;
        }
        let before_last = part_size.checked_mul(u64::from(parts - 1))?;
        (size > before_last && size - before_last <= part_size)
            .then_some(Layout { part_size, parts })
    }
}

/// Digests each part of a [`Layout`] as its bytes arrive, in order, then
/// the concatenation of those digests.
#[derive(Clone, Debug)]
pub struct PartHasher {
    algorithm: Algorithm,
    layout: Layout,
    /// The digest of the part being read.
    part: Hasher,
    /// Bytes of that part read so far (less than the part size).
    filled: u64,
    /// The digests of the parts read, concatenated.
    digests: Vec<u8>,
}

impl PartHasher {
    pub(super) fn new(algorithm: Algorithm, layout: Layout) -> PartHasher {
        PartHasher {
            algorithm,
            layout,
            part: algorithm.hasher(),
            filled: 0,
            digests: Vec::with_capacity(algorithm.digest_len() * layout.parts.min(10_000) as usize),
        }
    }

    pub(super) fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = self.layout.part_size - self.filled;
            let take = (room as usize).min(bytes.len());
            self.part.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == self.layout.part_size {
                self.end_part();
            }
        }
    }

    fn end_part(&mut self) {
        let part = std::mem::replace(&mut self.part, self.algorithm.hasher());
        self.digests.extend(part.finish());
        self.filled = 0;
    }

    /// The digest of the part digests. Bytes beyond or short of the
    /// layout give a different number of parts, hence another digest.
    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.end_part();
        }
        let mut outer = self.algorithm.hasher();
        outer.update(&self.digests);
        outer.finish()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::super::{Expect, hex};
    use super::*;

    fn digest(expect: &Expect, data: &[u8], piece: usize) -> Vec<u8> {
        let mut h = expect.hasher(data.len() as u64).unwrap();
        for chunk in data.chunks(piece) {
            h.update(chunk);
        }
        h.finish()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 13) as u8).collect()
    }

    #[test]
    fn layouts() {
        assert_eq!(
            Layout::new(25, 10, 3),
            Some(Layout {
                part_size: 10,
                parts: 3
            })
        );
        assert!(Layout::new(30, 10, 3).is_some());
        assert!(
            Layout::new(20, 10, 3).is_none(),
            "the last part would be empty"
        );
        assert!(
            Layout::new(31, 10, 3).is_none(),
            "the last part would be too big"
        );
        assert!(Layout::new(5, 10, 1).is_some());
        assert!(Layout::new(5, 0, 1).is_none());
        assert!(Layout::new(5, 10, 0).is_none());
        assert!(Layout::new(u64::MAX, u64::MAX, u32::MAX).is_none());
    }

    /// The multipart ETag computed here independently (the parts' MD5s
    /// with md-5, concatenated, MD5 again: what S3 documents), against
    /// the hasher fed in pieces that straddle the part boundaries.
    #[test]
    fn multipart_etag_matches_an_independent_computation() {
        let bytes = data(25_000);
        let part_size = 10_000;
        let mut concatenated = Vec::new();
        for part in bytes.chunks(part_size) {
            concatenated.extend(md5::Md5::digest(part));
        }
        let etag = format!("\"{}-3\"", hex(&md5::Md5::digest(&concatenated)));
        let (md5, parts) = Expect::multipart_etag(&etag).unwrap();
        assert_eq!(parts, 3);
        let layout = Layout::new(bytes.len() as u64, part_size as u64, parts).unwrap();
        let expect = Expect::Parts {
            algorithm: Algorithm::Md5,
            digest: md5.to_vec(),
            layout,
        };
        for piece in [1, 999, 4096, 10_000, 10_001, 25_000] {
            assert!(
                expect.check(&digest(&expect, &bytes, piece)).is_ok(),
                "{piece}"
            );
        }
        let mut corrupt = bytes.clone();
        corrupt[17_000] ^= 1;
        assert!(expect.check(&digest(&expect, &corrupt, 4096)).is_err());
        // The same bytes cut otherwise are another object.
        let other = Expect::Parts {
            algorithm: Algorithm::Md5,
            digest: md5.to_vec(),
            layout: Layout::new(25_000, 12_500, 2).unwrap(),
        };
        assert!(other.check(&digest(&other, &bytes, 4096)).is_err());
        assert_eq!(expect.id(), "etag_multipart_md5");
        assert!(expect.is_from_etag());
    }

    /// A one-part multipart upload of `hello`: its ETag is the MD5 of
    /// MD5("hello")'s 16 bytes, not MD5("hello").
    #[test]
    fn one_part_multipart_etag() {
        let want = md5::Md5::digest(md5::Md5::digest(b"hello"));
        let etag = format!("\"{}-1\"", hex(&want));
        let (md5, parts) = Expect::multipart_etag(&etag).unwrap();
        let expect = Expect::Parts {
            algorithm: Algorithm::Md5,
            digest: md5.to_vec(),
            layout: Layout::new(5, 8 * 1024 * 1024, parts).unwrap(),
        };
        assert!(expect.check(&digest(&expect, b"hello", 2)).is_ok());
        assert_eq!(Expect::from_etag(&etag), Expect::SizeOnly);
        assert_eq!(Expect::multipart_etag("\"abc-3\""), None);
        assert_eq!(Expect::multipart_etag(&etag.replace("-1", "-0")), None);
        assert_eq!(
            Expect::multipart_etag("\"5d41402abc4b2a76b9719d911017c592\""),
            None
        );
    }

    /// A composite SHA-256 (`<base64>-3`) and a composite CRC-32C, from
    /// part checksums computed independently with sha2 and crc32c.
    #[test]
    fn composite_checksums_match_an_independent_computation() {
        let bytes = data(20_001);
        let part_size = 8_000;
        let mut shas = Vec::new();
        let mut crcs = Vec::new();
        for part in bytes.chunks(part_size) {
            shas.extend(sha2::Sha256::digest(part));
            crcs.extend(crc32c::crc32c(part).to_be_bytes());
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let sha = format!("{}-3", b64.encode(sha2::Sha256::digest(&shas)));
        let crc = format!("{}-3", b64.encode(crc32c::crc32c(&crcs).to_be_bytes()));
        for (name, value, id) in [
            ("sha256", sha, "composite_sha256"),
            ("crc32c", crc, "composite_crc32c"),
        ] {
            assert_eq!(Expect::from_amz_checksum(name, &value), None);
            let (algorithm, digest_, parts) = Expect::composite_amz_checksum(name, &value).unwrap();
            let expect = Expect::Parts {
                algorithm,
                digest: digest_,
                layout: Layout::new(bytes.len() as u64, part_size as u64, parts).unwrap(),
            };
            assert_eq!(expect.id(), id);
            assert!(!expect.is_from_etag());
            assert!(
                expect.check(&digest(&expect, &bytes, 777)).is_ok(),
                "{name}"
            );
            let mut corrupt = bytes.clone();
            corrupt[20_000] ^= 0x80;
            assert!(
                expect.check(&digest(&expect, &corrupt, 777)).is_err(),
                "{name}"
            );
        }
        assert_eq!(Expect::composite_amz_checksum("sha256", "AAAA-3"), None);
        assert_eq!(Expect::composite_amz_checksum("md4", "AAAA-3"), None);
    }

    /// CRC-64/NVME's catalogue check value (`123456789` →
    /// `0xae8b14860a799888`, the reveng CRC catalogue and the NVMe spec).
    #[test]
    fn crc64nvme_check_value() {
        let value = base64::engine::general_purpose::STANDARD
            .encode(0xae8b_1486_0a79_9888u64.to_be_bytes());
        let expect = Expect::from_amz_checksum("crc64nvme", &value).unwrap();
        assert_eq!(expect, Expect::Crc64Nvme(0xae8b_1486_0a79_9888));
        assert!(expect.check(&digest(&expect, b"123456789", 4)).is_ok());
        assert!(expect.check(&digest(&expect, b"123456780", 4)).is_err());
        assert_eq!(expect.id(), "crc64nvme");
    }
}
