//! The TLS listener's certificate, served from memory and swapped when its files change.
//!
//! Certificates are renewed by replacing files: cert-manager rewrites the `tls.crt` and
//! `tls.key` of a mounted Secret (an atomic `..data` symlink swap), certbot and others
//! rename new files into place. The listener asks [`CertStore`] for the certificate at
//! every handshake (a rustls `ResolvesServerCert`), and a reload (SIGHUP or a watched
//! file change, the same triggers as the configuration: `crate::server`) swaps in the
//! new pair with one atomic pointer store. Handshakes already done keep their
//! connection (a keep-alive connection is never cut by a renewal); the next handshake
//! gets the new certificate.
//!
//! A new pair is used only when it is whole: both files PEM, the certificate X.509, the
//! key of a supported type and the one the certificate names, the certificate not
//! expired. Anything else keeps the running certificate, with a log line and
//! `idfabric_tls_cert_reloads_total{result="failure"}`; a half-written renewal (the
//! certificate replaced, the key not yet) fails that check, and the write that
//! completes it triggers the next reload.

use crate::metrics::metrics;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a certificate and key pair cannot be served. Messages name files, never key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: holds no PEM CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a PEM certificate chain: {why}", path.display())]
    BadPem { path: PathBuf, why: String },
    #[error("{}: holds no usable PEM private key ({why})", path.display())]
    NoKey { path: PathBuf, why: String },
    #[error("{}: the certificate is not X.509: {why}", path.display())]
    NotX509 { path: PathBuf, why: String },
    #[error("the key {} cannot serve the certificate {}: {why}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf, why: String },
    #[error("{}: the certificate expired ({not_after})", path.display())]
    Expired { path: PathBuf, not_after: String },
}

/// What a loaded certificate is, for log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub subject: String,
    /// Hex, colon-separated, as `openssl x509 -serial` shows it (without colons there).
    pub serial: String,
    pub not_after: String,
    pub expired: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subject `{}`, serial {}, not after {}", self.subject, self.serial, self.not_after)
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// The files hold what is served already.
    Unchanged,
    Swapped(Summary),
    /// The files were refused; the running certificate stays.
    Kept(CertError),
}

/// The files a store reads and a digest of what they held at the last load.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    digest: Vec<u8>,
}

/// The listener's current certificate and key.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    files: Mutex<Files>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("CertStore").field("cert", &files.cert).field("key", &files.key).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// One loaded pair: the key ready to sign, what the certificate is, and the digest of
/// the bytes read.
struct Loaded {
    key: CertifiedKey,
    summary: Summary,
    digest: Vec<u8>,
}

impl CertStore {
    /// Loads the pair to serve at start. An expired certificate is served (with a
    /// warning from the caller): refusing to start helps nobody reach the renewal.
    pub fn open(cert: &Path, key: &Path) -> Result<(CertStore, Summary), CertError> {
        let l = load(cert, key)?;
        let files = Files { cert: cert.to_path_buf(), key: key.to_path_buf(), digest: l.digest };
        Ok((CertStore { current: ArcSwap::from_pointee(l.key), files: Mutex::new(files) }, l.summary))
    }

    /// Points the store at other files (a reloaded `listen.https` named new paths);
    /// takes effect at the next [`CertStore::reload`].
    pub fn set_files(&self, cert: &Path, key: &Path) {
        let mut f = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if f.cert != cert || f.key != key {
            (f.cert, f.key) = (cert.to_path_buf(), key.to_path_buf());
            f.digest.clear();
        }
    }

    /// Reads the files again and swaps in the pair they hold if it changed and is
    /// whole; counts every change in `idfabric_tls_cert_reloads_total{result}`.
    pub fn reload(&self) -> Reloaded {
        let mut f = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match load(&f.cert, &f.key) {
            Ok(l) if l.digest == f.digest => return Reloaded::Unchanged,
            Ok(l) if l.summary.expired => {
                Reloaded::Kept(CertError::Expired { path: f.cert.clone(), not_after: l.summary.not_after })
            }
            Ok(l) => {
                self.current.store(Arc::new(l.key));
                f.digest = l.digest;
                Reloaded::Swapped(l.summary)
            }
            Err(e) => Reloaded::Kept(e),
        };
        let label = if matches!(outcome, Reloaded::Swapped(_)) { "success" } else { "failure" };
        metrics().tls_cert_reloads_total.with_label_values(&[label]).inc();
        outcome
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read { path: path.to_path_buf(), source })
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, CertError> {
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadPem { path: cert_path.to_path_buf(), why: e.to_string() })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate { path: cert_path.to_path_buf() });
    };
    let summary = summary(leaf).map_err(|why| CertError::NotX509 { path: cert_path.to_path_buf(), why })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::NoKey { path: key_path.to_path_buf(), why: e.to_string() })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| CertError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&cert_pem);
    ctx.update(&key_pem);
    Ok(Loaded { key, summary, digest: ctx.finish().as_ref().to_vec() })
}

fn summary(leaf: &CertificateDer<'_>) -> Result<Summary, String> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
    let not_after = c.validity().not_after;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(Summary {
        subject: c.subject().to_string(),
        serial: c.raw_serial_as_string(),
        not_after: not_after.to_string(),
        expired: not_after.timestamp() < now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn served(store: &CertStore) -> Vec<u8> {
        store.current.load().cert[0].as_ref().to_vec()
    }

    #[test]
    fn swaps_a_whole_pair_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ka) = pair(dir.path(), "a", "cert-a");
        let (cb, kb) = pair(dir.path(), "b", "cert-b");
        let (store, s) = CertStore::open(&ca, &ka).unwrap();
        assert!(s.subject.contains("cert-a") && !s.expired, "{s}");
        let a = served(&store);
        assert!(matches!(store.reload(), Reloaded::Unchanged));

        // A certificate with someone else's key: refused, A stays.
        std::fs::copy(&cb, &ca).unwrap();
        assert!(matches!(store.reload(), Reloaded::Kept(CertError::Mismatch { .. })));
        assert_eq!(served(&store), a);
        // The key follows: swapped.
        std::fs::copy(&kb, &ka).unwrap();
        match store.reload() {
            Reloaded::Swapped(s) => assert!(s.subject.contains("cert-b"), "{s}"),
            other => panic!("{other:?}"),
        }
        let b = served(&store);
        assert_ne!(a, b);

        // Garbage and missing files keep B.
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(matches!(store.reload(), Reloaded::Kept(CertError::NoCertificate { .. })));
        std::fs::remove_file(&ka).unwrap();
        assert!(matches!(store.reload(), Reloaded::Kept(CertError::Read { .. })));
        assert_eq!(served(&store), b);
    }
}
