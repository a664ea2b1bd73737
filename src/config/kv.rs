//! The KV event bridge's settings: flags over the engine's own variables.

use super::ServeArgs;
use crate::engine::Engine;
use crate::kv_events::{Index, KvEventsConfig, RedisTarget};
use crate::secret::Secret;

/// The bridge's settings: flags, then the variables the Python sidecar
/// reads (per engine), then its defaults. `env` reads the environment.
pub(super) fn kv_events_config(
    args: &ServeArgs,
    engine: Engine,
    pod: &str,
    model: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Option<KvEventsConfig> {
    if args.no_kv_events {
        return None;
    }
    let names = engine.kv_events_env();
    let endpoint = args
        .kv_events_endpoint
        .clone()
        .or_else(|| env(names.endpoint).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "tcp://localhost:5557".to_owned());
    let topic = args
        .kv_events_topic
        .clone()
        .or_else(|| env(names.topic))
        .unwrap_or_else(|| names.default_topic.to_owned());
    Some(KvEventsConfig {
        endpoint: endpoint.trim().to_owned(),
        topic,
        redis: RedisTarget {
            host: args.redis_host.clone(),
            port: args.redis_port,
            db: args.redis_db,
            password: env("REDIS_PASSWORD")
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        },
        index: Index {
            engine,
            pod: pod.to_owned(),
            model: model.to_owned(),
        },
        buffer: args.kv_events_buffer as usize,
    })
}
