//! TLS to etcd with rustls: the members verified against a CA file (or the
//! system's bundle), and a client certificate when one is given.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsFiles;
use crate::error::Error;

/// Debian's bundle of the system's CAs.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn file_error(what: &str, path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::TlsFiles { what: format!("{what} {}", path.display()), reason: reason.to_string() }
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The client side of TLS for `files`.
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, Error> {
    let ca = files.ca.as_deref().unwrap_or(Path::new(SYSTEM_CAS));
    let mut roots = RootCertStore::empty();
    for c in certificates("CA file", ca)? {
        roots.add(c).map_err(|e| file_error("CA file", ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsFiles { what: "TLS versions".into(), reason: e.to_string() })?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates("client certificate", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("client key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_error("client certificate", cert, format!("does not go with its key: {e}")))?
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::TlsFiles {
                what: "client certificate".into(),
                reason: "give both the certificate and its key, or neither".into(),
            })
        }
    };
    Ok(Arc::new(config))
}
