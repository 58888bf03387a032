//! The rustls configuration handed to reqwest.
//!
//! reqwest's `rustls-no-provider` feature panics while building a client unless a process-wide
//! crypto provider was installed first. Building the `ClientConfig` here, with ring passed
//! explicitly, needs no global state and cannot panic.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::ring;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls_platform_verifier::Verifier;

/// The certificates of a PEM file (`egress.extra_roots`): certificate authorities trusted
/// besides the system's, for upstreams and mail servers behind a private CA.
///
/// # Errors
/// When the file can't be read or holds no certificate, naming the file.
pub fn load_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM file of certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

use crate::error::ExecError;

/// A TLS 1.2/1.3 client configuration that verifies servers against the system's trust store
/// (the same verifier reqwest uses by default) and offers HTTP/1.1 only.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, ExecError> {
    let mut config = client_config_without_alpn(extra_roots)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The same configuration without ALPN, for SMTP.
pub(crate) fn client_config_without_alpn(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, ExecError> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra_roots.iter().cloned(), Arc::clone(&provider))
        .map_err(|e| ExecError::Client(format!("loading the system's root certificates: {e}")))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Client(format!("choosing TLS versions: {e}")))?
        // `dangerous()` is only rustls' door to a custom verifier; this one verifies fully.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}
