//! Where every outbound connection's policy is decided: the TLS trust
//! store, and the route (direct today; proxies are decided here too).
//!
//! One process-wide TLS configuration, built on first use from the
//! system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured by
//! `rustls-native-certs`), so every source, the HuggingFace API call and
//! LoRA calls trust the same authorities.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

use super::url::Origin;

/// No usable trust store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no usable CA certificates: {0}")]
pub struct TrustError(String);

/// How a connection to an origin is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to the origin.
    Direct,
}

/// The route to `origin`.
pub fn route(_origin: &Origin) -> Route {
    Route::Direct
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
