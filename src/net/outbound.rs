//! Where every outbound connection's policy is decided: the TLS trust
//! store, and the route (direct, or through a proxy).
//!
//! One process-wide TLS configuration, built on first use from the
//! system's roots plus the CAs of `SSL_CERT_FILE` and `SSL_CERT_DIR`, so
//! every source, the HuggingFace API call, LoRA sources and Redis trust
//! the same authorities.
//!
//! One process-wide proxy policy, read from the environment on first use
//! ([`super::proxy`] says how, as curl does): every outbound call of the
//! blocking client (S3, OBS, the hubs' APIs and CDNs, LoRA sources) asks
//! [`route`]. Calls to the inference engine in the same Pod never do: the
//! engine client (`upstream`) connects directly by construction, and the
//! LoRA side uses [`super::HttpClient::direct`].

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

use super::proxy::{Proxies, Proxy, ProxyError};
use super::url::Origin;

/// No usable trust store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no usable CA certificates: {0}")]
pub struct TrustError(String);

/// How a connection to an origin is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to the origin.
    Direct,
    /// Through a proxy: a CONNECT tunnel for `https://`, absolute-form
    /// requests for `http://`.
    Proxy(&'static Proxy),
}

/// The process's proxy policy, read from the environment once.
pub fn proxies() -> &'static Proxies {
    static PROXIES: OnceLock<Proxies> = OnceLock::new();
    PROXIES.get_or_init(|| Proxies::from_lookup(|name| std::env::var(name).ok()))
}

/// The route to `origin`; an error when the proxy variable that applies
/// cannot be used (the request fails rather than going around it).
pub fn route(origin: &Origin) -> Result<Route, ProxyError> {
    Ok(match proxies().for_origin(origin)? {
        None => Route::Direct,
        Some(proxy) => Route::Proxy(proxy),
    })
}

/// The TLS client configuration every outbound `https://` call uses.
pub fn tls_config() -> Result<Arc<ClientConfig>, TrustError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, TrustError>> = OnceLock::new();
    CONFIG.get_or_init(build_tls_config).clone()
}

/// The system's own CA bundle, where the distributions keep it (the
/// paths openssl-probe knows for Linux).
fn system_bundle() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    const BUNDLES: [&str; 5] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    BUNDLES
        .iter()
        .find_map(|path| {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path).ok()?;
            Some(certs.filter_map(Result::ok).collect())
        })
        .unwrap_or_default()
}

fn build_tls_config() -> Result<Arc<ClientConfig>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    // With SSL_CERT_FILE or SSL_CERT_DIR set, rustls-native-certs loads
    // those instead of the system's roots; ours add to them: a private CA
    // for a mirror must not cost the public ones.
    let found = rustls_native_certs::load_native_certs();
    let overridden = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let system = match overridden {
        true => system_bundle(),
        false => Vec::new(),
    };
    for cert in found.certs.into_iter().chain(system) {
        // One unparsable certificate in a bundle must not void the rest.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TrustError(format!("none found ({:?})", found.errors)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError(e.to_string()))?;
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}
