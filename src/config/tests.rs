use super::kv::{kv_events_config, parse_redis_url};
use super::*;

#[test]
fn allowed_roots_from_flags_else_the_variable() {
    let flags = [PathBuf::from("/models")];
    assert_eq!(allowed_roots(&flags, Some("/a:/b".into())), flags);
    assert_eq!(
        allowed_roots(&[], Some("/a::/b:".into())),
        [PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert!(allowed_roots(&[], Some("".into())).is_empty());
    assert!(allowed_roots(&[], None).is_empty());
}

/// No subcommands: the binary's are tested beside them.
#[derive(Debug, Subcommand)]
enum NoCommand {}

fn parse(args: &[&str]) -> Result<Cli<NoCommand>, clap::Error> {
    Cli::try_parse_from(std::iter::once("matrixinfer-runtime").chain(args.iter().copied()))
}

#[test]
fn defaults() {
    let cli = parse(&["-E", "vllm", "-I", "pod.ns", "-N", "llama"]).unwrap();
    assert!(cli.command.is_none());
    let config = Config::from_args(cli.serve).unwrap();
    assert_eq!(config.engine, Engine::Vllm);
    assert_eq!(
        config.listen.resolve().unwrap(),
        "0.0.0.0:9000".parse().unwrap()
    );
    assert_eq!(config.endpoint.base_url, "http://localhost:8000");
    assert_eq!(config.metrics_path, "/metrics");
    assert_eq!(config.request_timeout, Duration::from_secs(30));
    assert_eq!(
        (config.pod.as_str(), config.model.as_str()),
        ("pod.ns", "llama")
    );
}

#[test]
fn long_flags() {
    let cli = parse(&[
        "--engine",
        "SGLang",
        "--host",
        "127.0.0.1",
        "--port",
        "9100",
        "--engine-base-url",
        "http://127.0.0.1:30000",
        "--engine-metrics-path",
        "stats",
        "--pod",
        "p",
        "--model",
        "m",
        "--request-timeout",
        "2.5",
        "--workers",
        "3",
        "--io-driver",
        "epoll",
    ])
    .unwrap();
    let config = Config::from_args(cli.serve).unwrap();
    assert_eq!(config.engine, Engine::Sglang);
    assert_eq!(
        config.listen.resolve().unwrap(),
        "127.0.0.1:9100".parse().unwrap()
    );
    assert_eq!(config.metrics_path, "/stats");
    assert_eq!(config.request_timeout, Duration::from_millis(2500));
    assert_eq!(config.workers, 3);
    assert_eq!(config.io_driver, DriverChoice::Epoll);
}

#[test]
fn missing_required_flags_are_usage_errors() {
    let err = parse(&["-E", "vllm", "-I", "p"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("--model"), "{err}");
}

#[test]
fn unsupported_engine_exits_one() {
    let cli = parse(&["-E", "tgi", "-I", "p", "-N", "m"]).unwrap();
    let err = Config::from_args(cli.serve).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "Unsupported engine: tgi. Supported engine: vllm, sglang"
    );
}

#[test]
fn bad_values() {
    assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--request-timeout", "0"]).is_err());
    assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--workers", "0"]).is_err());
    let cli = parse(&["-E", "vllm", "-I", "p", "-N", "m", "-B", "https://x"]).unwrap();
    assert_eq!(Config::from_args(cli.serve).unwrap_err().exit_code(), 2);
}

#[test]
fn kv_events_settings() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let args = |extra: &[&str]| {
        let mut all = vec!["-E", "vllm", "-I", "p", "-N", "m"];
        all.extend_from_slice(extra);
        parse(&all).unwrap().serve
    };
    let resolve = |serve: &ServeArgs, engine, vars| {
        kv_events_config(serve, engine, "p", "m", env(vars)).unwrap()
    };

    let vllm = resolve(&args(&[]), Engine::Vllm, &[]).unwrap();
    assert_eq!(vllm.endpoint, "tcp://localhost:5557");
    assert_eq!(vllm.topic, "kv-events");
    assert_eq!(
        (vllm.redis.host.as_str(), vllm.redis.port, vllm.redis.db),
        ("redis-server", 6379, 0)
    );
    assert_eq!(vllm.redis.password, None);
    assert!(!vllm.redis.tls && vllm.redis.username.is_none());
    let sglang = resolve(&args(&[]), Engine::Sglang, &[]).unwrap();
    assert_eq!(sglang.topic, "");

    let vars: &[(&str, &str)] = &[
        ("VLLM_ZMQ_ENDPOINT", "tcp://engine:6000"),
        ("VLLM_ZMQ_TOPIC_FILTER", ""),
        ("SGLANG_ZMQ_ENDPOINT", "tcp://sglang:7000"),
        ("SGLANG_ZMQ_TOPIC_FILTER", "sg"),
        ("REDIS_PASSWORD", "secret"),
    ];
    let vllm = resolve(&args(&[]), Engine::Vllm, vars).unwrap();
    assert_eq!(
        (vllm.endpoint.as_str(), vllm.topic.as_str()),
        ("tcp://engine:6000", "")
    );
    assert_eq!(
        vllm.redis.password.as_ref().map(Secret::expose),
        Some("secret")
    );
    let sglang = resolve(&args(&[]), Engine::Sglang, vars).unwrap();
    assert_eq!(
        (sglang.endpoint.as_str(), sglang.topic.as_str()),
        ("tcp://sglang:7000", "sg")
    );

    // Flags beat the environment.
    let flags = args(&[
        "--kv-events-endpoint",
        "ipc:///tmp/kv",
        "--kv-events-topic",
        "t",
        "--redis-host",
        "10.0.0.1",
        "--redis-port",
        "6380",
        "--redis-db",
        "2",
        "--kv-events-buffer",
        "8",
        "--kv-events-replay-endpoint",
        " tcp://vllm:5558 ",
    ]);
    let flagged = resolve(&flags, Engine::Vllm, vars).unwrap();
    assert_eq!(
        (flagged.endpoint.as_str(), flagged.topic.as_str()),
        ("ipc:///tmp/kv", "t")
    );
    assert_eq!(
        (
            flagged.redis.host.as_str(),
            flagged.redis.port,
            flagged.redis.db
        ),
        ("10.0.0.1", 6380, 2)
    );
    assert_eq!(flagged.buffer, 8);
    assert_eq!(flagged.replay_endpoint.as_deref(), Some("tcp://vllm:5558"));
    assert_eq!(
        resolve(&args(&[]), Engine::Vllm, vars)
            .unwrap()
            .replay_endpoint,
        None
    );
    let tls = resolve(
        &args(&["--redis-tls", "--redis-username", "kv"]),
        Engine::Vllm,
        vars,
    )
    .unwrap();
    assert_eq!(tls.redis.to_string(), "rediss://kv@redis-server:6379/0");

    assert!(resolve(&args(&["--no-kv-events"]), Engine::Vllm, vars).is_none());
    assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--redis-db", "-1"]).is_err());
}

#[test]
fn values() {
    assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
    for bad in ["0", "-1", "x", "inf", "NaN", ""] {
        assert!(parse_seconds(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_size("114k"), Ok(114 * 1024));
    assert_eq!(parse_size("1M"), Ok(1024 * 1024));
    assert_eq!(parse_size("5000"), Ok(5000));
    for bad in ["0", "k", "1g", "-1k"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn redis_url() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let args = |extra: &[&str]| {
        let mut all = vec!["-E", "vllm", "-I", "p", "-N", "m"];
        all.extend_from_slice(extra);
        parse(&all).unwrap().serve
    };
    let resolve = |serve: &ServeArgs, vars| {
        kv_events_config(serve, Engine::Vllm, "p", "m", env(vars)).map(|c| c.unwrap().redis)
    };

    // The URL names the server; the password stays out of its display.
    let url = &[("REDIS_URL", "rediss://kv:p%40ss@cache.example:6380/3")];
    let target = resolve(&args(&[]), url).unwrap();
    assert_eq!(target.to_string(), "rediss://kv@cache.example:6380/3");
    assert_eq!(target.password.as_ref().map(Secret::expose), Some("p@ss"));
    assert!(!format!("{target:?}").contains("p@ss"));
    // Over --redis-host and its kin; --redis-tls and --redis-username
    // still apply.
    let flags = args(&["--redis-host", "h", "--redis-tls", "--redis-username", "u"]);
    let target = resolve(&flags, &[("REDIS_URL", "redis://10.0.0.1")]).unwrap();
    assert_eq!(target.to_string(), "rediss://u@10.0.0.1:6379/0");
    // The password from REDIS_PASSWORD, or the URL, not both.
    let target = resolve(
        &args(&[]),
        &[("REDIS_URL", "redis://r/1"), ("REDIS_PASSWORD", "pw")],
    )
    .unwrap();
    assert_eq!(target.password.as_ref().map(Secret::expose), Some("pw"));
    let both = resolve(
        &args(&[]),
        &[("REDIS_URL", "redis://:url-pw@r"), ("REDIS_PASSWORD", "pw")],
    )
    .unwrap_err()
    .to_string();
    assert!(both.contains("REDIS_PASSWORD"), "{both}");
    assert!(!both.contains("url-pw") && !both.contains("pw@"), "{both}");
    // An empty variable is unset.
    let target = resolve(&args(&[]), &[("REDIS_URL", "")]).unwrap();
    assert_eq!(target.to_string(), "redis://redis-server:6379/0");
}

#[test]
fn redis_urls() {
    let ok = [
        ("redis://localhost", "redis://localhost:6379/0", None),
        ("redis://localhost:7000/", "redis://localhost:7000/0", None),
        ("rediss://u@h/15", "rediss://u@h:6379/15", None),
        ("redis://:secret@h", "redis://h:6379/0", Some("secret")),
        ("redis://[::1]:7000/2", "redis://[::1]:7000/2", None),
        ("redis://127.0.0.1", "redis://127.0.0.1:6379/0", None),
    ];
    for (url, shown, password) in ok {
        let target = parse_redis_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(target.to_string(), shown, "{url}");
        assert_eq!(target.password.as_ref().map(Secret::expose), password);
    }
    let bad = [
        "http://h",
        "redis://",
        "redis://h/x",
        "redis://h/-1",
        "redis://h/0?protocol=resp3",
        "localhost:6379",
        "redis://:hunter2@h/db0",
    ];
    for url in bad {
        let reason = parse_redis_url(url).map(|t| t.to_string()).unwrap_err();
        assert!(!reason.contains("hunter2"), "{reason}");
    }
}
