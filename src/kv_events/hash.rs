//! The standardized block hash: one value per block of tokens, the same
//! whatever engine or engine version cached it, so that a router can look
//! a prompt's blocks up across Pods.
//!
//! SHA-256 over the block's token ids packed as 4-byte big-endian
//! integers; the first 8 bytes of the digest read big-endian, with the top
//! bit cleared (the value fits an i64, as the router expects).

use sha2::{Digest, Sha256};

/// The standardized hash of one block's tokens.
pub fn standard_hash(tokens: &[u32]) -> u64 {
    let mut sha = Sha256::new();
    // Packed first: one update call is much cheaper than one per token.
    let mut packed = [0u8; 4 * 64];
    for chunk in tokens.chunks(64) {
        for (slot, token) in packed.chunks_exact_mut(4).zip(chunk) {
            slot.copy_from_slice(&token.to_be_bytes());
        }
        sha.update(&packed[..4 * chunk.len()]);
    }
    let digest = sha.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & 0x7FFF_FFFF_FFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python:
    /// `int.from_bytes(hashlib.sha256(b"".join(t.to_bytes(4, "big") for t
    /// in tokens)).digest()[:8], "big") & 0x7FFFFFFFFFFFFFFF`.
    #[test]
    fn vectors() {
        assert_eq!(standard_hash(&[1, 2, 3, 4]), 4233425515844289900);
        assert_eq!(standard_hash(&[0]), 6863311662677045211);
        let range: Vec<u32> = (0..16).collect();
        assert_eq!(standard_hash(&range), 6473494984593326032);
    }

    #[test]
    fn long_blocks_hash_like_one_update() {
        let tokens: Vec<u32> = (0..1000).map(|i| i * 7919).collect();
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_be_bytes()).collect();
        let digest = Sha256::digest(&bytes);
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) & (u64::MAX >> 1);
        assert_eq!(standard_hash(&tokens), expected);
    }
}
