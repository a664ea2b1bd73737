//! The engines' KV-cache event batches, decoded from msgpack.
//!
//! Both engines serialize with msgspec, in one of two encodings:
//!
//! - positional (`array_like`): the batch is `[ts, events, dp_rank?]` and
//!   each event a tagged array, `["BlockStored", block_hashes,
//!   parent_block_hash, token_ids, block_size, lora_id, medium?, lora_name?,
//!   extra_keys?, group_idx?, …]`, `["BlockRemoved", block_hashes, medium?,
//!   …]`, `["AllBlocksCleared"]` (SGLang, vLLM up to 0.11);
//! - named (newer vLLM): the batch is `{"ts", "events",
//!   "data_parallel_rank"}` and each event a map with a `"type"` key.
//!
//! Only what the Redis index needs is kept: the block hashes and, for
//! stored blocks, the token ids. Trailing and unknown fields are ignored,
//! so later engine versions that add fields keep working. An event that
//! does not have the expected shape is counted and skipped; the rest of
//! its batch is kept.

use std::fmt;

use rmpv::ValueRef;

/// A block hash as the engine sent it: an integer (vLLM: up to u64; SGLang:
/// a signed i64) or a byte string (vLLM with hashes kept as bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BlockHash {
    /// Written in decimal in Redis keys, as the Python sidecar does.
    Int(i128),
    /// Written in lowercase hex in Redis keys.
    Bytes(Box<[u8]>),
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockHash::Int(n) => write!(f, "{n}"),
            BlockHash::Bytes(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

/// One KV-cache event, reduced to what the index needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Blocks entered the engine's cache. `token_ids` holds every block's
    /// tokens in order, the same number for each block (checked).
    Stored {
        /// Engine hashes, one per block.
        hashes: Vec<BlockHash>,
        /// The blocks' tokens, concatenated.
        token_ids: Vec<u32>,
    },
    /// Blocks left the cache.
    Removed {
        /// Engine hashes, one per block.
        hashes: Vec<BlockHash>,
    },
    /// The whole cache was emptied.
    Cleared,
}

impl Event {
    /// The event's type as a metric label.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Stored { .. } => EventKind::Stored,
            Event::Removed { .. } => EventKind::Removed,
            Event::Cleared => EventKind::Cleared,
        }
    }
}

/// Event types, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `BlockStored`.
    Stored = 0,
    /// `BlockRemoved`.
    Removed = 1,
    /// `AllBlocksCleared`.
    Cleared = 2,
    /// A type this version does not know (ignored, not an error).
    Other = 3,
}

impl EventKind {
    /// Every kind, in label order.
    pub const ALL: [EventKind; 4] = [
        EventKind::Stored,
        EventKind::Removed,
        EventKind::Cleared,
        EventKind::Other,
    ];

    /// The engine's name for it.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Stored => "BlockStored",
            EventKind::Removed => "BlockRemoved",
            EventKind::Cleared => "AllBlocksCleared",
            EventKind::Other => "other",
        }
    }
}

/// A decoded batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// When the engine made it (Unix seconds), if it said.
    pub ts: Option<f64>,
    /// Its usable events, in order.
    pub events: Vec<Event>,
    /// Events of a type this version does not know.
    pub unknown: u32,
    /// Events skipped for their shape, each with the reason (for the log).
    pub malformed: Vec<String>,
}

/// A payload that is not an event batch at all.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Not msgpack, or cut short.
    #[error("not msgpack: {0}")]
    Msgpack(#[from] rmpv::decode::Error),
    /// msgpack, but not `[ts, events, …]` or `{"ts", "events", …}`.
    #[error("not an event batch: {0}")]
    Shape(&'static str),
}

/// Decodes one ZMQ payload.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, BatchError> {
    let value = rmpv::decode::read_value_ref(&mut &payload[..])?;
    let (ts, events) = match &value {
        ValueRef::Array(items) => (items.first(), items.get(1)),
        ValueRef::Map(entries) => (field(entries, "ts"), field(entries, "events")),
        _ => return Err(BatchError::Shape("neither an array nor a map")),
    };
    let Some(ValueRef::Array(events)) = events else {
        return Err(BatchError::Shape("no list of events"));
    };
    let mut batch = Batch {
        ts: ts.and_then(as_f64),
        events: Vec::with_capacity(events.len()),
        ..Batch::default()
    };
    for (i, event) in events.iter().enumerate() {
        match decode_event(event) {
            Ok(Some(event)) => batch.events.push(event),
            Ok(None) => batch.unknown += 1,
            Err(reason) => batch.malformed.push(format!("event {i}: {reason}")),
        }
    }
    Ok(batch)
}

/// `Ok(None)` for an event type we do not know.
fn decode_event(value: &ValueRef<'_>) -> Result<Option<Event>, String> {
    let fields = Fields::of(value)?;
    let event = match fields.tag()? {
        // SGLang's variant with extra metadata has the same leading fields.
        "BlockStored" | "BlockStoredWithMetadata" => {
            let hashes = hashes(fields.get("block_hashes", 1)?)?;
            let token_ids = token_ids(fields.get("token_ids", 3)?)?;
            check_even_blocks(hashes.len(), token_ids.len())?;
            Event::Stored { hashes, token_ids }
        }
        "BlockRemoved" => Event::Removed {
            hashes: hashes(fields.get("block_hashes", 1)?)?,
        },
        "AllBlocksCleared" => Event::Cleared,
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// An event's fields, by position or by name.
enum Fields<'v, 'a> {
    Positional(&'v [ValueRef<'a>]),
    Named(&'v [(ValueRef<'a>, ValueRef<'a>)]),
}

impl<'v, 'a> Fields<'v, 'a> {
    fn of(value: &'v ValueRef<'a>) -> Result<Fields<'v, 'a>, String> {
        match value {
            ValueRef::Array(items) => Ok(Fields::Positional(items)),
            ValueRef::Map(entries) => Ok(Fields::Named(entries)),
            _ => Err("neither a tagged array nor a map".into()),
        }
    }

    fn tag(&self) -> Result<&'v str, String> {
        let tag = match self {
            Fields::Positional(items) => items.first(),
            Fields::Named(entries) => field(entries, "type"),
        };
        match tag {
            Some(ValueRef::String(s)) => s.as_str().ok_or_else(|| "tag is not UTF-8".into()),
            _ => Err("no type tag".into()),
        }
    }

    /// Field `name`, at `position` (counting the tag) in the array form.
    fn get(&self, name: &str, position: usize) -> Result<&'v ValueRef<'a>, String> {
        match self {
            Fields::Positional(items) => items.get(position),
            Fields::Named(entries) => field(entries, name),
        }
        .ok_or_else(|| format!("no {name}"))
    }
}

fn field<'v, 'a>(
    entries: &'v [(ValueRef<'a>, ValueRef<'a>)],
    name: &str,
) -> Option<&'v ValueRef<'a>> {
    entries.iter().find_map(|(key, value)| match key {
        ValueRef::String(key) if key.as_str() == Some(name) => Some(value),
        _ => None,
    })
}

fn hashes(value: &ValueRef<'_>) -> Result<Vec<BlockHash>, String> {
    let ValueRef::Array(items) = value else {
        return Err("block_hashes is not a list".into());
    };
    items
        .iter()
        .map(|item| match item {
            ValueRef::Integer(n) => n
                .as_u64()
                .map(i128::from)
                .or_else(|| n.as_i64().map(i128::from))
                .map(BlockHash::Int)
                .ok_or_else(|| "block hash out of range".into()),
            ValueRef::Binary(bytes) => Ok(BlockHash::Bytes((*bytes).into())),
            _ => Err("block hash is neither an integer nor bytes".into()),
        })
        .collect()
}

fn token_ids(value: &ValueRef<'_>) -> Result<Vec<u32>, String> {
    let ValueRef::Array(items) = value else {
        return Err("token_ids is not a list".into());
    };
    items
        .iter()
        .map(|item| match item {
            ValueRef::Integer(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| "token id out of range".into()),
            // SGLang's EAGLE mode sends token pairs; they do not hash like
            // the prompt's tokens, so such events cannot be indexed.
            _ => Err("token id is not an integer".into()),
        })
        .collect()
}

/// The Python sidecar derives the block size as tokens / blocks and skips
/// an event where that does not divide evenly.
fn check_even_blocks(blocks: usize, tokens: usize) -> Result<(), String> {
    if blocks > 0 && (tokens == 0 || !tokens.is_multiple_of(blocks)) {
        return Err(format!(
            "{tokens} token ids do not divide into {blocks} blocks"
        ));
    }
    Ok(())
}

fn as_f64(value: &ValueRef<'_>) -> Option<f64> {
    match value {
        ValueRef::F64(x) => Some(*x),
        ValueRef::F32(x) => Some(f64::from(*x)),
        ValueRef::Integer(n) => n.as_f64(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(value: Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).unwrap();
        out
    }

    fn s(text: &str) -> Value {
        Value::from(text)
    }

    fn ints(values: &[i64]) -> Value {
        Value::Array(values.iter().map(|&v| Value::from(v)).collect())
    }

    #[test]
    fn positional_events_with_and_without_trailing_fields() {
        let big = u64::MAX - 7;
        let payload = encode(Value::Array(vec![
            Value::F64(1_700_000_000.5),
            Value::Array(vec![
                // vLLM 0.8: up to lora_id.
                Value::Array(vec![
                    s("BlockStored"),
                    Value::Array(vec![Value::from(big), Value::from(2)]),
                    Value::Nil,
                    ints(&[1, 2, 3, 4]),
                    Value::from(2),
                    Value::Nil,
                ]),
                // Current vLLM, positional, with every trailing field.
                Value::Array(vec![
                    s("BlockStored"),
                    Value::Array(vec![Value::Binary(vec![0xab, 0x01])]),
                    Value::from(big),
                    ints(&[5, 6]),
                    Value::from(2),
                    Value::Nil,
                    s("GPU"),
                    s("adapter"),
                    Value::Array(vec![Value::Nil]),
                    Value::from(0),
                    s("full_attention"),
                    Value::from(7),
                ]),
                Value::Array(vec![
                    s("BlockRemoved"),
                    ints(&[-5]),
                    s("GPU"),
                    Value::from(1),
                ]),
                Value::Array(vec![s("BlockRemoved"), ints(&[2])]),
                Value::Array(vec![s("AllBlocksCleared")]),
                Value::Array(vec![s("KVCacheCreated"), Value::from(1)]),
            ]),
            Value::from(3),
        ]));
        let batch = decode_batch(&payload).unwrap();
        assert_eq!(batch.ts, Some(1_700_000_000.5));
        assert_eq!(batch.unknown, 1);
        assert!(batch.malformed.is_empty(), "{:?}", batch.malformed);
        assert_eq!(
            batch.events,
            vec![
                Event::Stored {
                    hashes: vec![BlockHash::Int(big.into()), BlockHash::Int(2)],
                    token_ids: vec![1, 2, 3, 4],
                },
                Event::Stored {
                    hashes: vec![BlockHash::Bytes(vec![0xab, 0x01].into())],
                    token_ids: vec![5, 6],
                },
                Event::Removed {
                    hashes: vec![BlockHash::Int(-5)]
                },
                Event::Removed {
                    hashes: vec![BlockHash::Int(2)]
                },
                Event::Cleared,
            ]
        );
    }

    #[test]
    fn named_events() {
        let map = |entries: Vec<(&str, Value)>| {
            Value::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
        };
        let payload = encode(map(vec![
            ("ts", Value::F64(2.0)),
            (
                "events",
                Value::Array(vec![
                    map(vec![
                        ("type", s("BlockStored")),
                        ("block_hashes", ints(&[10, 11])),
                        ("parent_block_hash", Value::Nil),
                        ("token_ids", ints(&[1, 2, 3, 4, 5, 6])),
                        ("block_size", Value::from(3)),
                        ("lora_id", Value::Nil),
                        ("medium", s("GPU")),
                        ("lora_name", Value::Nil),
                        ("kv_cache_spec_kind", s("full_attention")),
                    ]),
                    map(vec![
                        ("type", s("BlockRemoved")),
                        ("block_hashes", ints(&[10])),
                    ]),
                    map(vec![("type", s("AllBlocksCleared"))]),
                ]),
            ),
            ("data_parallel_rank", Value::from(0)),
        ]));
        let batch = decode_batch(&payload).unwrap();
        assert_eq!(batch.ts, Some(2.0));
        assert_eq!(
            batch.events,
            vec![
                Event::Stored {
                    hashes: vec![BlockHash::Int(10), BlockHash::Int(11)],
                    token_ids: vec![1, 2, 3, 4, 5, 6],
                },
                Event::Removed {
                    hashes: vec![BlockHash::Int(10)]
                },
                Event::Cleared,
            ]
        );
    }

    #[test]
    fn malformed_events_are_skipped_and_the_rest_kept() {
        let payload = encode(Value::Array(vec![
            Value::F64(1.0),
            Value::Array(vec![
                Value::from(42),
                Value::Array(vec![]),
                Value::Array(vec![s("BlockStored"), s("not a list")]),
                Value::Array(vec![
                    s("BlockStored"),
                    ints(&[1, 2]),
                    Value::Nil,
                    ints(&[1, 2, 3]),
                ]),
                Value::Array(vec![s("BlockStored"), ints(&[1]), Value::Nil, ints(&[-1])]),
                Value::Array(vec![
                    s("BlockStored"),
                    ints(&[1]),
                    Value::Nil,
                    ints(&[1 << 33]),
                ]),
                Value::Array(vec![
                    s("BlockStored"),
                    ints(&[1]),
                    Value::Nil,
                    Value::Array(vec![ints(&[1, 2])]),
                ]),
                Value::Array(vec![s("BlockRemoved"), Value::Array(vec![Value::F64(1.0)])]),
                Value::Array(vec![s("BlockRemoved")]),
                Value::Array(vec![s("BlockRemoved"), ints(&[9])]),
            ]),
        ]));
        let batch = decode_batch(&payload).unwrap();
        assert_eq!(batch.malformed.len(), 9, "{:?}", batch.malformed);
        assert!(
            batch.malformed[3].contains("do not divide"),
            "{:?}",
            batch.malformed
        );
        assert_eq!(
            batch.events,
            vec![Event::Removed {
                hashes: vec![BlockHash::Int(9)]
            }]
        );
    }

    #[test]
    fn payloads_that_are_not_batches() {
        assert!(matches!(decode_batch(b""), Err(BatchError::Msgpack(_))));
        assert!(matches!(
            decode_batch(&[0x92, 0x01]),
            Err(BatchError::Msgpack(_))
        ));
        assert!(matches!(
            decode_batch(&encode(Value::from(1))),
            Err(BatchError::Shape(_))
        ));
        let no_events = encode(Value::Array(vec![Value::F64(1.0), Value::from(2)]));
        assert!(matches!(
            decode_batch(&no_events),
            Err(BatchError::Shape(_))
        ));
        // A length prefix far beyond the payload allocates nothing.
        let huge = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(decode_batch(&huge).is_err());
    }

    #[test]
    fn hashes_render_for_keys() {
        assert_eq!(
            BlockHash::Int(u64::MAX.into()).to_string(),
            "18446744073709551615"
        );
        assert_eq!(BlockHash::Int(-12).to_string(), "-12");
        assert_eq!(
            BlockHash::Bytes(vec![0, 0xff, 0x10].into()).to_string(),
            "00ff10"
        );
    }
}
