//! The `kv_events` target's property: decoded KV event batches are
//! consistent (whole, non-zero tokens per block).

use crate::kv_events::decode::{Event, decode_batch};

/// A ZMQ payload of KV events: never panics, and every stored event with
/// blocks has the same whole, non-zero number of tokens per block.
pub fn kv_events(data: &[u8]) {
    let Ok(batch) = decode_batch(data) else {
        return;
    };
    for event in &batch.events {
        if let Event::Stored { hashes, token_ids } = event
            && !hashes.is_empty()
        {
            assert!(!token_ids.is_empty());
            assert_eq!(token_ids.len() % hashes.len(), 0);
        }
    }
}
