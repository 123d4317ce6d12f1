//! TLS shared by the IMAP and SMTP sides: which certificates are trusted,
//! the client handshake, and when plaintext is allowed at all.
//!
//! Servers are checked against the system's roots plus the PEM file a
//! config names in `ca_file`; nothing is ever accepted unchecked. rustls
//! runs with the `ring` provider.

use std::io::{self, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a TLS setting could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The `ca_file` could not be read.
    #[error("cannot read ca_file {}: {source}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `ca_file` holds no usable PEM certificate.
    #[error("ca_file {} holds no PEM certificate", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in `ca_file` was refused as a trust anchor.
    #[error("ca_file {}: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the protocol settings.
    #[error("tls setup: {0}")]
    Setup(#[from] rustls::Error),
    /// The host cannot be checked against a certificate.
    #[error("{host:?} is not a valid host name for TLS")]
    ServerName {
        /// The host as configured.
        host: String,
    },
}

/// Builds the rustls client settings: system roots plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = system_roots();
    if let Some(path) = ca_file {
        for cert in read_ca_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system's trust anchors; unreadable ones are skipped.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "loaded system trust anchors");
    roots
}

/// Reads the PEM certificates of a `ca_file`; at least one is required.
pub fn read_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_ca_pem(path)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ReadCa {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a `ca_file` as PEM bytes, for lettre's certificate type.
pub fn read_ca_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadCa {
        path: path.to_owned(),
        source,
    })
}

/// The name a server's certificate is checked against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName {
        host: host.to_owned(),
    })
}

/// Why a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings could not be built (e.g. an unreadable `ca_file`).
    #[error(transparent)]
    Setup(#[from] TlsError),
    /// rustls refused the server (certificate, name, protocol).
    #[error("{0}")]
    Handshake(io::Error),
    /// The connection broke during the handshake.
    #[error("{0}")]
    Io(io::Error),
}

/// A TLS client connection over TCP; async-imap and lettre run over it.
#[derive(Debug)]
pub struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

/// Runs the TLS handshake on `tcp`, checking the certificate for `host`.
pub async fn connect(
    ca_file: Option<&Path>,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream, ConnectError> {
    let config = client_config(ca_file)?;
    let name = server_name(host)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(TlsStream(stream)),
        Err(e) if from_rustls(&e) => Err(ConnectError::Handshake(e)),
        Err(e) => Err(ConnectError::Io(e)),
    }
}

/// Whether an I/O error carries a rustls refusal.
fn from_rustls(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// Whether `host` names this machine only: `localhost` or a loopback IP.
///
/// Plaintext (`tls = "none"`) is allowed only to such a host.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "imap.vendor.example",
            "10.0.0.1",
            "localhost.example",
            "::2",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::ReadCa { .. }), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");
    }

    #[test]
    fn system_roots_alone_build_a_config() {
        client_config(None).unwrap();
    }

    #[test]
    fn server_names_accept_hosts_and_ips() {
        server_name("localhost").unwrap();
        server_name("127.0.0.1").unwrap();
        assert!(server_name("bad host").is_err());
    }
}
