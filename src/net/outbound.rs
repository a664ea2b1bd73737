//! Where every outbound connection's policy is decided: the TLS trust
//! store, and the route (direct, or through a proxy).
//!
//! One process-wide TLS configuration, built on first use from the
//! system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured by
//! `rustls-native-certs`), so every source, the HuggingFace API call and
//! LoRA sources trust the same authorities.
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

fn build_tls_config() -> Result<Arc<ClientConfig>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
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
