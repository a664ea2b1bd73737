//! The KV event bridge's settings: flags over the engine's own variables.
//!
//! Redis: `REDIS_URL` (environment only), when set, names the server:
//! scheme (`rediss://` for TLS), user, host, port and database; else
//! `--redis-host`, `--redis-port`, `--redis-db`. `--redis-tls` turns TLS
//! on either way, `--redis-username` names the ACL user (over the URL's).
//! The password comes from the environment only, so `ps` never shows it:
//! `REDIS_PASSWORD`, or the password of `REDIS_URL`, which is accepted
//! because it is in the environment too; both at once are refused, as an
//! ambiguity nobody could see in a log. The URL is never logged or kept
//! whole, and errors about it never quote it.

use percent_encoding::percent_decode_str;

use super::{ConfigError, ServeArgs};
use crate::engine::Engine;
use crate::kv_events::{Index, KvEventsConfig, RedisTarget};
use crate::secret::Secret;

/// Redis's port when the URL names none.
const REDIS_PORT: u16 = 6379;

/// The bridge's settings: flags, then the variables the Python sidecar
/// reads (per engine), then its defaults. `env` reads the environment.
pub(super) fn kv_events_config(
    args: &ServeArgs,
    engine: Engine,
    pod: &str,
    model: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<KvEventsConfig>, ConfigError> {
    if args.no_kv_events {
        return Ok(None);
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
    Ok(Some(KvEventsConfig {
        endpoint: endpoint.trim().to_owned(),
        topic,
        replay_endpoint: args
            .kv_events_replay_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
        redis: redis_target(args, &env)?,
        index: Index {
            engine,
            pod: pod.to_owned(),
            model: model.to_owned(),
        },
        buffer: args.kv_events_buffer as usize,
    }))
}

/// Where Redis is and how to log in; see the module's doc.
fn redis_target(
    args: &ServeArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<RedisTarget, ConfigError> {
    let set = |name| env(name).filter(|v| !v.trim().is_empty());
    let password = set("REDIS_PASSWORD").map(Secret::new);
    let username = args.redis_username.clone().filter(|u| !u.is_empty());
    let Some(url) = set("REDIS_URL") else {
        return Ok(RedisTarget {
            host: args.redis_host.clone(),
            port: args.redis_port,
            db: args.redis_db,
            tls: args.redis_tls,
            username,
            password,
        });
    };
    let invalid = |reason: String| ConfigError::Invalid {
        option: "REDIS_URL",
        reason,
    };
    let mut target = parse_redis_url(url.trim()).map_err(invalid)?;
    if target.password.is_some() && password.is_some() {
        return Err(invalid(
            "it carries a password and REDIS_PASSWORD is set too: keep one".into(),
        ));
    }
    if (args.redis_host.as_str(), args.redis_port, args.redis_db) != ("redis-server", REDIS_PORT, 0)
    {
        tracing::warn!(
            "REDIS_URL names the Redis server: --redis-host, --redis-port and --redis-db (REDIS_HOST, REDIS_PORT, REDIS_DB) are ignored"
        );
    }
    target.tls |= args.redis_tls;
    if let Some(user) = username {
        if target.username.as_ref().is_some_and(|u| *u != user) {
            tracing::warn!(
                user = %user,
                "--redis-username (REDIS_USERNAME) replaces the user of REDIS_URL"
            );
        }
        target.username = Some(user);
    }
    target.password = target.password.or(password);
    Ok(target)
}

/// `redis://[[user][:password]@]host[:port][/db]`, or `rediss://` for
/// TLS. The reasons never quote the URL: it may hold a password.
pub(super) fn parse_redis_url(text: &str) -> Result<RedisTarget, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(format!(
                "scheme {other:?} is neither redis:// nor rediss:// (TLS)"
            ));
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err("it names no host".into()),
    };
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("the path names no database number ({db:?})"))?,
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err("query parameters and fragments are not supported".into());
    }
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
    };
    let username = decode(url.username(), "user")?;
    let password = match url.password() {
        Some(p) => decode(p, "password")?,
        None => String::new(),
    };
    Ok(RedisTarget {
        host,
        port: url.port().unwrap_or(REDIS_PORT),
        db,
        tls,
        username: Some(username).filter(|u| !u.is_empty()),
        password: Some(password).filter(|p| !p.is_empty()).map(Secret::new),
    })
}
