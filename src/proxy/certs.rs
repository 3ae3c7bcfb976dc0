//! The listener's TLS certificate behind a swappable resolver, so a reload can replace the
//! certificate files without dropping connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// Loads a PEM certificate chain and private key into a rustls `CertifiedKey`.
pub(crate) fn load(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let bad =
        || format!("cannot load the certificate chain `{cert}` and private key `{key}` (PEM)");
    let (certs, private_key) = match pingora::tls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        _ => return Err(bad()),
    };
    pingora::tls::install_default_crypto_provider();
    let provider =
        CryptoProvider::get_default().ok_or_else(|| "no TLS crypto provider".to_string())?;
    CertifiedKey::from_der(certs, private_key, provider)
        .map(Arc::new)
        .map_err(|e| format!("{}: {e}", bad()))
}

#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    pub fn new(initial: Arc<CertifiedKey>) -> ReloadableCert {
        ReloadableCert {
            current: ArcSwap::new(initial),
        }
    }

    pub fn replace(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
