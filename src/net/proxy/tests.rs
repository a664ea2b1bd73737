use std::collections::HashMap;

use super::*;

fn proxies(vars: &[(&str, &str)]) -> Proxies {
    let table: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Proxies::from_lookup(|name| table.get(name).cloned())
}

fn origin(url: &str) -> Origin {
    crate::net::Url::parse(url).unwrap().origin
}

/// Where a request to `url` goes: `direct`, the proxy's `host:port`, or
/// the error.
fn via(p: &Proxies, url: &str) -> String {
    match p.for_origin(&origin(url)) {
        Ok(None) => "direct".to_owned(),
        Ok(Some(proxy)) => format!("{}:{}", proxy.origin.host, proxy.origin.port),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn variables_are_read_as_curl_reads_them() {
    let p = proxies(&[
        ("HTTPS_PROXY", "http://up:3128"),
        ("HTTP_PROXY", "http://h:1"),
    ]);
    assert_eq!(via(&p, "https://s3.amazonaws.com/b"), "up:3128");
    // httpoxy: the upper-case form is ignored for http://.
    assert_eq!(via(&p, "http://s3.local/b"), "direct");
    let p = proxies(&[
        ("https_proxy", "lower:1"),
        ("HTTPS_PROXY", "upper:2"),
        ("http_proxy", "plain:3"),
    ]);
    assert_eq!(via(&p, "https://x/"), "lower:1");
    assert_eq!(via(&p, "http://x/"), "plain:3");
    let p = proxies(&[("ALL_PROXY", "all:4"), ("https_proxy", "")]);
    assert_eq!(via(&p, "https://x/"), "all:4");
    assert_eq!(via(&p, "http://x/"), "all:4");
    assert_eq!(via(&proxies(&[]), "https://x/"), "direct");
    // No port: curl's 1080; no scheme: http.
    assert_eq!(
        via(&proxies(&[("https_proxy", "corp")]), "https://x/"),
        "corp:1080"
    );
    let p = proxies(&[("https_proxy", "http://[fd00::1]:8080/")]);
    assert_eq!(via(&p, "https://x/"), "fd00::1:8080");
}

#[test]
fn no_proxy_names_suffixes_addresses_blocks_and_ports() {
    let p = proxies(&[
        ("https_proxy", "http://proxy:3128"),
        (
            "NO_PROXY",
            "example.com, .internal,*.svc.local 10.0.0.0/8,192.168.1.7,[::1],store:9000,Localhost",
        ),
    ]);
    for direct in [
        "https://example.com/",
        "https://s3.example.com/",
        "https://EXAMPLE.com./",
        "https://a.b.internal/",
        "https://internal/",
        "https://x.svc.local/",
        "https://10.1.2.3/",
        "https://192.168.1.7/",
        "https://[::1]:8443/",
        "https://store:9000/",
        "https://localhost/",
    ] {
        assert_eq!(via(&p, direct), "direct", "{direct}");
    }
    for proxied in [
        "https://badexample.com/",
        "https://example.com.evil/",
        "https://11.0.0.1/",
        "https://192.168.1.8/",
        "https://[::2]/",
        "https://store:9001/",
        "https://huggingface.co/",
    ] {
        assert_eq!(via(&p, proxied), "proxy:3128", "{proxied}");
    }
    let all = proxies(&[("https_proxy", "p:1"), ("no_proxy", "*")]);
    assert_eq!(via(&all, "https://anything/"), "direct");
    // The lower-case form wins, as in curl.
    let p = proxies(&[("https_proxy", "p:1"), ("no_proxy", "a"), ("NO_PROXY", "b")]);
    assert_eq!(
        (via(&p, "https://a/"), via(&p, "https://b/")),
        ("direct".into(), "p:1".into())
    );
}

#[test]
fn credentials_are_decoded_sent_as_basic_and_never_shown() {
    let p = proxies(&[("https_proxy", "http://us%65r:p%40ss%3Aw0rd@proxy:3128")]);
    let proxy = p.for_origin(&origin("https://x/")).unwrap().unwrap();
    // base64("user:p@ss:w0rd")
    assert_eq!(
        proxy.authorization.as_ref().unwrap().expose(),
        "Basic dXNlcjpwQHNzOncwcmQ="
    );
    for shown in [
        format!("{proxy}"),
        format!("{proxy:?}"),
        format!("{p:?}"),
        p.describe(),
    ] {
        assert!(
            !shown.contains("w0rd") && !shown.contains("%3Aw0rd"),
            "{shown}"
        );
    }
    assert_eq!(proxy.to_string(), "http://proxy:3128 (from https_proxy)");
    let user_only = proxies(&[("https_proxy", "http://user@proxy:1")]);
    let proxy = user_only
        .for_origin(&origin("https://x/"))
        .unwrap()
        .unwrap();
    assert_eq!(
        proxy.authorization.as_ref().unwrap().expose(),
        "Basic dXNlcjo="
    );
}

#[test]
fn unusable_proxies_fail_the_requests_they_would_carry_without_showing_credentials() {
    for (value, says) in [
        ("https://u:s3cret@proxy:443", "TLS to the proxy"),
        ("socks5://u:s3cret@proxy:1080", "only http://"),
        ("http://u:s3cret@proxy:99999", "port"),
        ("http://u:s3cret@:8080", "no host"),
    ] {
        let p = proxies(&[("HTTPS_PROXY", value), ("no_proxy", "direct.example")]);
        let shown = via(&p, "https://x/");
        assert!(shown.starts_with("error: HTTPS_PROXY="), "{shown}");
        assert!(shown.contains(says) && shown.contains("***@"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!p.describe().contains("s3cret"));
        // A no_proxy host does not need the proxy at all.
        assert_eq!(via(&p, "https://direct.example/"), "direct");
        // http:// targets read another variable.
        assert_eq!(via(&p, "http://x/"), "direct");
    }
}
