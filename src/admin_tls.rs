//! TLS for the admin API (`[admin] tls = { cert, key }`): reads the PEM certificate chain
//! and private key into a rustls server configuration (ring as the crypto provider, TLS
//! 1.2 and 1.3), and says which file is at fault when that fails. The config loader calls
//! it so that `warden check` refuses a bad file; `warden up` calls it again to serve.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Which file of `[admin] tls` a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `cert`: the certificate chain.
    Cert,
    /// `key`: the private key.
    Key,
}

/// Why the files of `[admin] tls` cannot serve HTTPS: the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub file: TlsFile,
    /// Its path, as shown.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The rustls configuration of the admin API from `files`.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let fail = |file: TlsFile, path: &Path, reason: String| TlsError {
        file,
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| fail(TlsFile::Cert, &files.cert, pem_problem(&e, "certificate")))?;
    if chain.is_empty() {
        let reason = "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned();
        return Err(fail(TlsFile::Cert, &files.cert, reason));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| fail(TlsFile::Key, &files.key, pem_problem(&e, "private key")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(TlsFile::Cert, &files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let reason = format!("cannot serve with this key and certificate: {e}");
            fail(TlsFile::Key, &files.key, reason)
        })
}

/// A PEM reading error in words.
fn pem_problem(error: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => format!("cannot read: {e}"),
        Error::NoItemsFound => format!("holds no PEM {what}"),
        other => format!("not a PEM {what}: {other}"),
    }
}
