//! TLS with rustls and its `ring` provider: certificates of the listeners (reloadable) and
//! the trust roots of `https://` backends.
//!
//! - Listeners: `tls_cert` (PEM, the certificate chain, leaf first) and `tls_key` (PEM, PKCS#8,
//!   PKCS#1 or SEC1). [`ServerTls`] holds the rustls config in an [`ArcSwap`]:
//!   [`ServerTls::reload`] reads the files again and swaps the config in for new connections
//!   (open ones keep theirs); when the new files are not usable it changes nothing and says
//!   why. The SIGHUP reload calls it.
//! - Backends: `https://` URLs are verified against the system's trust store, or against only
//!   the CA certificates of the backend's `ca_file` when set (an internal CA).
//! - TLS 1.2 and 1.3 with rustls' safe defaults; ALPN offers `h2` and `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The one crypto provider influx-ha uses (no process-wide default is installed).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(String),
}

/// A listener's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn file_error(what: &'static str, path: &Path, message: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads every certificate of a PEM file; an empty file is an error.
pub fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Builds a server config from the files.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert, "certificate file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        file_error(
            "private key file",
            &files.key,
            format!("no usable PEM private key ({e})"),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::Rustls(format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

// === impl ServerTls ===

/// Files read and checked, ready for [`ServerTls::install`].
pub struct LoadedTls {
    files: TlsFiles,
    config: ServerConfig,
}

/// The TLS side of one listener: its files and the config new connections get.
pub struct ServerTls {
    files: ArcSwap<TlsFiles>,
    config: ArcSwap<ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files.load())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files: ArcSwap::from_pointee(files),
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again (or `files`, when the config now names others) into a config,
    /// without using it yet ([`ServerTls::install`]), so that several listeners can each be
    /// loaded before any changes; on error nothing changes.
    pub fn load(&self, files: Option<&TlsFiles>) -> Result<LoadedTls, TlsError> {
        let files = files
            .cloned()
            .unwrap_or_else(|| TlsFiles::clone(&self.files.load()));
        let config = server_config(&files)?;
        Ok(LoadedTls { files, config })
    }

    /// Uses what [`ServerTls::load`] read for new connections.
    pub fn install(&self, loaded: LoadedTls) {
        self.config.store(Arc::new(loaded.config));
        self.files.store(Arc::new(loaded.files));
    }

    /// An acceptor with the current config.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}

/// The client config of an `https://` backend: its `ca_file`'s certificates as the only
/// roots, else the system's trust store.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let config = match ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "CA file")? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("CA file", path, e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use hyper_rustls::ConfigBuilderExt;
            builder
                .with_native_roots()
                .map_err(|e| {
                    TlsError::Rustls(format!("cannot load the system's CA certificates: {e}"))
                })?
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// A client config that trusts nothing, for plain `http://` backends (never used to connect).
pub fn no_tls_client_config() -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests;
