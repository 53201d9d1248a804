//! TLS for tests: a self-signed certificate made on the spot (rcgen) and a one-shot
//! HTTPS client that trusts only it. Shared by tests/security_admin.rs and tests/hub.rs.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::{parse_response, Response};

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM, DER).
pub fn self_signed() -> (String, String, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("self-signed certificate");
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        certified.cert.der().to_vec(),
    )
}

/// One HTTPS request to 127.0.0.1:`port` trusting only `root` (DER) for `localhost`,
/// with a JSON `body` if given.
pub fn https(
    port: u16,
    root: &[u8],
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // actix closes without a TLS close_notify: what came before is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_response(&raw)
}
