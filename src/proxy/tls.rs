//! Upstream TLS trust: an optional per-route CA bundle (PEM), loaded when the route's
//! pool is built (start-up and every reload).
//! Without one, pingora verifies upstream certificates against the system roots.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{parse_x509, WrappedX509};

/// DER certificates from a PEM bundle.
pub(crate) fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after
            .find(END)
            .ok_or_else(|| "a certificate has no END line".to_string())?;
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| "a certificate is not valid base64".to_string())?;
        // Checked here because pingora's parser panics on bad DER.
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("a certificate does not parse: {e}"))?;
        out.push(der);
        rest = &after[end + END.len()..];
    }
    if out.is_empty() {
        return Err("no PEM certificates found".into());
    }
    Ok(out)
}

/// Loads a CA bundle for `HttpPeer::options.ca`.
pub(crate) fn load_ca(path: &std::path::Path) -> Result<Arc<CaType>, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = pem_certificates(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let wrapped: Vec<WrappedX509> = certs
        .into_iter()
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect();
    Ok(Arc::from(wrapped.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(pem_certificates("").is_err());
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .is_err()
        );
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\n!!!\n").is_err());
    }
}
