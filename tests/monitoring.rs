//! What operators look at, checked against Prometheus itself: the alerts
//! of `deploy/monitoring/` under `promtool`'s unit tests, and a real
//! Prometheus (Debian's `prometheus`) that scrapes two sidecars through
//! the shipped scrape config and answers every dashboard query and every
//! alert expression. One sidecar is vLLM's with the default prefix, the
//! other SGLang's with `--metric-prefix kthena`: the dashboard's queries
//! must return series for both.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::util::*;

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The alert names of a rule file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_the_alerts() {
    for args in [
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(monitoring_dir())
            .output_tied();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every alert fires in a unit test and stays silent in one, has its
/// runbook section, and the operator's PrometheusRule carries exactly the
/// groups of the plain rule file.
#[test]
fn every_alert_is_tested_explained_and_wrapped_for_the_operator() {
    let dir = monitoring_dir();
    let rules = read(&dir.join("rules.yml"));
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 8, "{alerts:?}");

    let wrapped = read(&dir.join("prometheusrule.yaml"));
    assert!(wrapped.contains("\nkind: PrometheusRule\n"));
    let spec = wrapped
        .split_once("\nspec:\n")
        .expect("prometheusrule.yaml has a spec")
        .1;
    let groups = &rules[rules.find("\ngroups:\n").expect("rules.yml has groups") + 1..];
    let indented: String = groups
        .lines()
        .map(|l| match l {
            "" => "\n".to_owned(),
            l => format!("  {l}\n"),
        })
        .collect();
    assert!(
        spec == indented,
        "prometheusrule.yaml's spec is not rules.yml's groups indented by two spaces"
    );

    let tests = read(&dir.join("rules.test.yml"));
    let runbook = read(&dir.join("../../docs/operations.md"));
    for alert in &alerts {
        let evals: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|e| e.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            evals.iter().any(|e| e.contains("exp_alerts: []")),
            "no unit test expects {alert} to stay silent"
        );
        assert!(
            evals.iter().any(|e| !e.contains("exp_alerts: []")),
            "no unit test expects {alert} to fire"
        );
        assert!(
            runbook.contains(&format!("\n### {alert}\n")),
            "docs/operations.md has no section for {alert}"
        );
        let url = format!(
            "runbook_url: \"docs/operations.md#{}\"",
            alert.to_lowercase()
        );
        assert!(rules.contains(&url), "{alert} has no {url}");
    }
}

/// `(source label, target label)` of each relabelling that copies one
/// label to another, whichever spelling (operator or plain) the file uses.
fn label_copies(yaml: &str) -> BTreeSet<(String, String)> {
    let mut copies = BTreeSet::new();
    let mut source = None;
    for line in yaml.lines().map(str::trim) {
        let line = line.trim_start_matches("- ");
        if let Some(rest) = line
            .strip_prefix("sourceLabels: [")
            .or_else(|| line.strip_prefix("source_labels: ["))
        {
            source = Some(rest.trim_end_matches(']').to_owned());
        } else if let Some(target) = line
            .strip_prefix("targetLabel: ")
            .or_else(|| line.strip_prefix("target_label: "))
        {
            if let Some(source) = source.take() {
                copies.insert((source, target.to_owned()));
            }
        } else if line.starts_with("action: keep") {
            source = None;
        }
    }
    copies
}

/// The PodMonitor (which no Prometheus here can run) labels series as the
/// plain scrape config does, and the example Deployment carries what both
/// select: the model label and the named port.
#[test]
fn the_pod_monitor_relabels_as_the_scrape_config_does() {
    let dir = monitoring_dir();
    let pod_monitor = read(&dir.join("podmonitor.yaml"));
    let plain = read(&dir.join("prometheus.yml"));
    let copies = label_copies(&pod_monitor);
    assert_eq!(copies, label_copies(&plain));
    for target in ["namespace", "pod", "model", "node"] {
        assert!(copies.iter().any(|(_, t)| t == target), "{copies:?}");
    }
    assert!(pod_monitor.contains("targetLabel: job\n          replacement: matrixinfer-runtime\n"));
    assert!(plain.contains("- job_name: matrixinfer-runtime\n"));
    for text in [&pod_monitor, &plain] {
        assert!(text.contains("matrixinfer_io_model") || text.contains("matrixinfer.io/model"));
        assert!(text.contains("runtime-metrics"));
    }
    let deployment = read(&dir.join("../vllm-with-runtime.yaml"));
    assert!(deployment.contains("        matrixinfer.io/model: "));
    assert!(
        deployment
            .contains("            - name: runtime-metrics\n              containerPort: 8900\n")
    );
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Tied,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, config: &Path) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn_tied();
        let mut prometheus = Prometheus { child, addr };
        eventually("Prometheus is ready", || {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    read(&dir.join("prometheus.log"))
                );
            }
            TcpStream::connect(addr).is_ok() && get(addr, "/-/ready").status == 200
        });
        prometheus
    }

    /// An API answer, `status` checked to be "success".
    fn api(&self, path: &str) -> Value {
        let answer = get(self.addr, path).json();
        assert_eq!(answer["status"], "success", "{path}: {answer}");
        answer["data"].clone()
    }

    /// The instant vector `expr` evaluates to now.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        match &data["result"] {
            Value::Array(series) => series.clone(),
            // A scalar (vector(0) alone, say) counts as one series.
            other => vec![other.clone()],
        }
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Retries `check` until it returns `Ok`, for three times the patience
/// (Prometheus needs a few scrapes for a rate); panics with its last error.
fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + patience() * 3;
    loop {
        let result = check();
        match result {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A Pod as Kubernetes service discovery would describe it.
struct Pod<'a> {
    target: SocketAddr,
    name: &'a str,
    /// The `matrixinfer.io/model` label; `None`: not a runtime Pod.
    model: Option<&'a str>,
}

/// deploy/monitoring/prometheus.yml as shipped, with the Pods given as
/// static targets carrying the labels Kubernetes' pod discovery sets
/// (Debian's Prometheus is built without Kubernetes discovery), so that
/// the shipped relabelling is what attaches `namespace`, `pod` and
/// `model`; intervals of one second.
fn scrape_config(pods: &[Pod]) -> String {
    let shipped = read(&monitoring_dir().join("prometheus.yml"));
    let mut targets = String::from("    static_configs:\n");
    for pod in pods {
        targets += &format!(
            "      - targets: [\"{}\"]\n        labels:\n          \
             __meta_kubernetes_namespace: monitoring-test\n          \
             __meta_kubernetes_pod_name: {}\n          \
             __meta_kubernetes_pod_node_name: node-1\n          \
             __meta_kubernetes_pod_container_port_name: runtime-metrics\n",
            pod.target, pod.name
        );
        if let Some(model) = pod.model {
            targets +=
                &format!("          __meta_kubernetes_pod_label_matrixinfer_io_model: {model}\n");
        }
    }
    let mut config = shipped;
    for (from, to) in [
        (
            "    kubernetes_sd_configs:\n      - role: pod\n",
            targets.as_str(),
        ),
        ("  scrape_interval: 15s\n", "  scrape_interval: 1s\n"),
        (
            "  evaluation_interval: 15s\n",
            "  evaluation_interval: 1s\n",
        ),
        ("    scrape_interval: 15s\n", "    scrape_interval: 1s\n"),
        ("    scrape_timeout: 10s\n", "    scrape_timeout: 1s\n"),
    ] {
        assert!(config.contains(from), "prometheus.yml has no {from:?}");
        config = config.replacen(from, to, 1);
    }
    config
}

/// The dashboard's panels, those inside rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// `text` with the dashboard's variables set as Grafana would.
fn substitute(text: &str, prefix: &str, pod: &str, model: &str) -> String {
    let mut out = text.to_owned();
    for (name, value) in [
        ("__rate_interval", "10s"),
        ("prefix", prefix),
        ("job", "matrixinfer-runtime"),
        ("model", model),
        ("pod", pod),
    ] {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "a variable is left in {out}");
    out
}

#[test]
fn prometheus_answers_every_panel_and_alert() {
    let filter = crate::filters::filter("passthrough");
    let vllm = Engine::flavor("vllm-v1").size("30k").start();
    let sglang = Engine::flavor("sglang-0.5").size("30k").start();
    let sidecar_a = Sidecar::new("vllm", vllm.addr)
        .workers(1)
        .arg("--filter")
        .arg(&filter)
        .start();
    let sidecar_b = Sidecar::new("sglang", sglang.addr)
        .workers(1)
        .arg("--metric-prefix")
        .arg("kthena")
        .arg("--filter")
        .arg(&filter)
        .start();

    let dir = temp_dir("monitoring");
    let config = scrape_config(&[
        Pod {
            target: sidecar_a.addr,
            name: "pod-a",
            model: Some("llama"),
        },
        Pod {
            target: sidecar_b.addr,
            name: "pod-b",
            model: Some("qwen"),
        },
        // Not labelled as a runtime Pod: the scrape config leaves it out.
        Pod {
            target: vllm.addr,
            name: "pod-c",
            model: None,
        },
    ]);
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(monitoring_dir().join("rules.yml"), dir.join("rules.yml")).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml"))
        .output_tied();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let prometheus = Prometheus::start(&dir, &dir.join("prometheus.yml"));

    // Load beside Prometheus' scrapes: both sidecars scraped back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = [sidecar_a.addr, sidecar_b.addr]
        .into_iter()
        .map(|addr| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut scrapes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(client.get("/metrics").status, 200);
                    scrapes += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                scrapes
            })
        })
        .collect();

    // The relabelling: two runtime targets, their series labelled.
    wait_until("the targets discovered", || {
        let targets = prometheus.api("/api/v1/targets");
        let count = |state: &str| targets[state].as_array().map_or(0, Vec::len);
        match (count("activeTargets"), count("droppedTargets")) {
            (2, 1) => Ok(()),
            _ => Err(targets.to_string()),
        }
    });
    wait_until("both sidecars scraped", || {
        let info = prometheus.query("matrixinfer_runtime_info");
        let labels: BTreeSet<String> = info
            .iter()
            .map(|s| {
                let m = &s["metric"];
                format!(
                    "{} {} {} {} {} {}",
                    m["job"], m["namespace"], m["pod"], m["model"], m["node"], m["engine"]
                )
            })
            .collect();
        let expected: BTreeSet<String> = [
            r#""matrixinfer-runtime" "monitoring-test" "pod-a" "llama" "node-1" "vllm""#,
            r#""matrixinfer-runtime" "monitoring-test" "pod-b" "qwen" "node-1" "sglang""#,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        (labels == expected)
            .then_some(())
            .ok_or(format!("{labels:?}"))
    });

    let dashboard: Value =
        serde_json::from_str(&read(&monitoring_dir().join("grafana-dashboard.json"))).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("prefix")["query"], "matrixinfer");

    // The model and Pod variables list both sidecars' values.
    for (name, expected) in [("model", ["llama", "qwen"]), ("pod", ["pod-a", "pod-b"])] {
        let query = variable(name)["definition"].as_str().unwrap();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{query}"));
        let (selector, label) = inner.rsplit_once(", ").unwrap();
        let selector = substitute(selector, "matrixinfer", ".*", ".*");
        let series = prometheus.api(&format!("/api/v1/series?match[]={}", encode(&selector)));
        let values: BTreeSet<&str> = series
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s[label].as_str())
            .collect();
        assert_eq!(values, BTreeSet::from(expected), "{query}");
    }

    // Every panel's queries, for each sidecar with its prefix: valid, and
    // once Prometheus has a few scrapes, never empty.
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            queries.push((title, target["expr"].as_str().unwrap()));
        }
    }
    assert!(queries.len() >= 30, "{}", queries.len());
    let cases = [
        ("matrixinfer", "pod-a", "llama"),
        ("kthena", "pod-b", "qwen"),
    ];
    wait_until("every panel query returns series", || {
        let mut empty = Vec::new();
        for (prefix, pod, model) in cases {
            for (title, expr) in &queries {
                let expr = substitute(expr, prefix, pod, model);
                if prometheus.query(&expr).is_empty() {
                    empty.push(format!("{title} ({prefix}): {expr}"));
                }
            }
        }
        match empty.is_empty() {
            true => Ok(()),
            false => Err(format!("no series for\n{}", empty.join("\n"))),
        }
    });
    // And a prefix the sidecar does not serve finds nothing: the variable
    // is what selects the families.
    let waiting = queries
        .iter()
        .find(|(_, e)| e.contains("num_requests_waiting"))
        .unwrap()
        .1;
    assert!(
        prometheus
            .query(&substitute(waiting, "matrixinfer", "pod-b", "qwen"))
            .is_empty()
    );

    // Every alert: loaded from the shipped rule file, its expression
    // valid, evaluated without error, and none firing on a healthy run.
    let rules = read(&monitoring_dir().join("rules.yml"));
    let expected: BTreeSet<String> = alert_names(&rules).into_iter().collect();
    wait_until("every alert evaluated", || {
        let data = prometheus.api("/api/v1/rules?type=alert");
        let mut names = BTreeSet::new();
        for group in data["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let name = rule["name"].as_str().unwrap();
                let query = rule["query"].as_str().unwrap();
                prometheus.query(query);
                if rule["health"] != "ok" {
                    return Err(format!("{name}: {} {}", rule["health"], rule["lastError"]));
                }
                assert_eq!(rule["state"], "inactive", "{name} on a healthy run");
                names.insert(name.to_owned());
            }
        }
        assert_eq!(names, expected);
        Ok(())
    });

    stop.store(true, Ordering::Relaxed);
    for thread in load {
        assert!(thread.join().unwrap() > 0);
    }
}
