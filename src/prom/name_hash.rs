//! Hashing family names and series for the per-scrape sets that key on
//! them (copied series, where each family went), so that no name is
//! allocated per family.

use std::hash::Hasher;

/// A family name's (or a series' labels') 64-bit hash, with foldhash
/// (hashbrown's own hasher): several times cheaper than SipHash on every
/// family start of a routed scrape (the `filter` benchmark) and every
/// copied sample, and well mixed (FxHash, tried first, collides on names
/// that differ only in a few trailing digits). Fixed seed, not keyed:
/// the names come from the engine in the same Pod.
pub fn name_hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6d69_5f72_756e_7469).hash_one(name)
}

/// Passes a `u64` key through: for maps whose keys are [`name_hash`]es.
#[derive(Debug, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
