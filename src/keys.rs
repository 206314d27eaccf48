//! Key material: generating the development set (`idfabric keys generate`) and loading
//! signing keys (the broker's, the dev provider's) into a JWS signer.
//!
//! Signing keys are parsed once; `Signer::sign_jwt` then costs one signature. The
//! algorithm follows the key type (P-256 → ES256, Ed25519 → EdDSA, RSA → RS256), and
//! the `kid` is the RFC 7638 thumbprint of the public key, so it changes with the key.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a PEM file: {source}")]
    NotPem { path: PathBuf, source: pem::PemError },
    #[error("{path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{0} already exist(s); pass --force to overwrite")]
    Exists(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("key generation failed: {0}")]
    Crypto(#[from] aws_lc_rs::error::Unspecified),
}

enum Inner {
    Es256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

/// A private key ready to sign JWTs.
pub struct Signer {
    inner: Inner,
    pub kid: String,
    pub alg: &'static str,
    jwk: Value,
    rng: SystemRandom,
    /// The base64url JOSE header for `typ: JWT`, encoded once (every minted
    /// `X-Identity-Token` carries it).
    jwt_header: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    /// Loads a PKCS#8 PEM private key (EC P-256, Ed25519 or RSA).
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        let err = |reason: String| KeyError::Load { path: path.to_path_buf(), reason };
        let text = std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
        let pem = pem::parse(&text).map_err(|source| KeyError::NotPem { path: path.to_path_buf(), source })?;
        if pem.tag() != "PRIVATE KEY" {
            return Err(err(format!("expected a PKCS#8 `PRIVATE KEY`, found `{}`", pem.tag())));
        }
        Signer::from_pkcs8(pem.contents()).ok_or_else(|| err("not an EC P-256, Ed25519 or RSA private key".into()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Option<Signer> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            let p = k.public_key().as_ref();
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
            return Some(Signer::with(Inner::Es256(k), "ES256", jwk));
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8(der) {
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())});
            return Some(Signer::with(Inner::Ed(k), "EdDSA", jwk));
        }
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
            let strip = |v: &[u8]| v.iter().skip_while(|b| **b == 0).copied().collect::<Vec<u8>>();
            let jwk = json!({"kty": "RSA", "n": b64(&strip(&c.n)), "e": b64(&strip(&c.e))});
            return Some(Signer::with(Inner::Rs256(k), "RS256", jwk));
        }
        None
    }

    fn with(inner: Inner, alg: &'static str, mut jwk: Value) -> Signer {
        let kid = thumbprint(&jwk);
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg);
        jwk["use"] = json!("sig");
        let jwt_header = encoded_header(alg, &kid, "JWT");
        Signer { inner, kid, alg, jwk, rng: SystemRandom::new(), jwt_header }
    }

    /// The public key as a JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Serialises `claims` as a compact JWS with this key. `claims` is any serialisable
    /// value (a `serde_json::Value`, or a struct of borrowed fields as the minted
    /// `X-Identity-Token` uses): it is written as JSON into a per-thread scratch buffer
    /// and base64url-encoded straight into the token, so a token costs one allocation
    /// besides the signature. Claims that fail to serialise (a map with non-string keys,
    /// which none of ours has) give an empty payload, which every JWT parser refuses.
    pub fn sign_jwt<T: serde::Serialize + ?Sized>(&self, typ: &str, claims: &T) -> String {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut out = String::with_capacity(1024);
        if typ == "JWT" {
            out.push_str(&self.jwt_header);
        } else {
            out.push_str(&encoded_header(self.alg, &self.kid, typ));
        }
        out.push('.');
        SCRATCH.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            if serde_json::to_writer(&mut *buf, claims).is_err() {
                buf.clear();
            }
            URL_SAFE_NO_PAD.encode_string(&*buf, &mut out);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
        });
        self.sign_into(&mut out);
        out
    }

    /// Signs `out` (a JWS signing input) and appends `.` and the base64url signature.
    fn sign_into(&self, out: &mut String) {
        let msg = out.as_bytes();
        let sig = match &self.inner {
            Inner::Es256(k) => match k.sign(&self.rng, msg) {
                Ok(s) => {
                    out.push('.');
                    URL_SAFE_NO_PAD.encode_string(s.as_ref(), out);
                    return;
                }
                Err(_) => Vec::new(),
            },
            _ => self.sign(msg),
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, out);
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.inner {
            Inner::Es256(k) => k.sign(&self.rng, msg).map(|s| s.as_ref().to_vec()).unwrap_or_default(),
            Inner::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Inner::Rs256(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                match k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, msg, &mut sig) {
                    Ok(()) => sig,
                    Err(_) => Vec::new(),
                }
            }
        }
    }
}

/// The base64url JOSE header `{"alg","kid","typ"}` (keys in this order).
fn encoded_header(alg: &str, kid: &str, typ: &str) -> String {
    b64(json!({"alg": alg, "kid": kid, "typ": typ}).to_string().as_bytes())
}

/// RFC 7638 JWK thumbprint (SHA-256), truncated to 16 characters for a readable kid.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => json!({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}),
        Some("OKP") => json!({"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}),
        _ => json!({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}),
    };
    // serde_json with default features keeps keys sorted (BTreeMap), as RFC 7638 needs.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.to_string().as_bytes());
    b64(digest.as_ref())[..16].to_string()
}

/// The OpenID Connect `at_hash` of `access_token` for an ID token signed with the JWS
/// algorithm `alg`: base64url of the left half of the hash whose size matches the
/// algorithm, SHA-256 for `RS256`/`ES256`/`PS256`, SHA-384 for `*384`, SHA-512 for
/// `*512` and for `EdDSA` (Ed25519, as the OpenID Connect Core 1.0 errata set 2 rules).
/// <https://openid.net/specs/openid-connect-core-1_0.html#CodeIDToken> (3.1.3.6).
/// Algorithms outside this list hash with SHA-256.
pub fn at_hash(alg: &str, access_token: &str) -> String {
    let algo = match alg {
        "EdDSA" => &aws_lc_rs::digest::SHA512,
        a if a.ends_with("384") => &aws_lc_rs::digest::SHA384,
        a if a.ends_with("512") => &aws_lc_rs::digest::SHA512,
        _ => &aws_lc_rs::digest::SHA256,
    };
    let d = aws_lc_rs::digest::digest(algo, access_token.as_bytes());
    let h = d.as_ref();
    b64(&h[..h.len() / 2])
}

/// Whether an ID token's `at_hash` claim binds it to `access_token` ([`at_hash`]).
pub fn at_hash_matches(claim: &str, access_token: &str, alg: jsonwebtoken::Algorithm) -> bool {
    use jsonwebtoken::Algorithm::*;
    let name = match alg {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
    };
    at_hash(name, access_token) == claim
}

/// Which algorithm a generated key is for.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Es256,
    Ed25519,
    Rsa2048,
}

/// A new PKCS#8 private key as PEM.
pub fn generate_pem(kind: KeyKind) -> Result<String, KeyError> {
    let der: Vec<u8> = match kind {
        KeyKind::Es256 => {
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).and_then(|k| k.to_pkcs8v1())?.as_ref().to_vec()
        }
        KeyKind::Ed25519 => Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8())?.as_ref().to_vec(),
        KeyKind::Rsa2048 => {
            use aws_lc_rs::encoding::AsDer;
            let k = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = k.as_der()?;
            der.as_ref().to_vec()
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// The files `idfabric keys generate` writes.
pub const GENERATED: &[&str] = &[
    "dev-tls.crt",
    "dev-tls.key",
    "broker-signing.pem",
    "session.key",
    "admin.token",
    "dev-idp-workforce.pem",
    "dev-idp-customer.pem",
];

/// Writes the development key set into `dir`. With `only_missing`, existing files are
/// kept (used by `idfabric demo`); otherwise existing files are an error unless `force`.
pub fn generate_dev_set(dir: &Path, force: bool, only_missing: bool) -> Result<Vec<PathBuf>, KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write { path: dir.to_path_buf(), source })?;
    let existing: Vec<&str> = GENERATED.iter().copied().filter(|f| dir.join(f).exists()).collect();
    if !existing.is_empty() && !force && !only_missing {
        return Err(KeyError::Exists(existing.iter().map(|f| dir.join(f).display().to_string()).collect::<Vec<_>>().join(", ")));
    }
    let mut written = Vec::new();
    let mut write = |name: &str, bytes: &[u8], secret: bool| -> Result<(), KeyError> {
        let path = dir.join(name);
        if only_missing && path.exists() {
            return Ok(());
        }
        std::fs::write(&path, bytes).map_err(|source| KeyError::Write { path: path.clone(), source })?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let _ = secret;
        written.push(path);
        Ok(())
    };
    if !(only_missing && dir.join("dev-tls.crt").exists() && dir.join("dev-tls.key").exists()) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        write("dev-tls.crt", cert.cert.pem().as_bytes(), false)?;
        write("dev-tls.key", cert.signing_key.serialize_pem().as_bytes(), true)?;
    }
    if !(only_missing && dir.join("broker-signing.pem").exists()) {
        write("broker-signing.pem", generate_pem(KeyKind::Es256)?.as_bytes(), true)?;
    }
    if !(only_missing && dir.join("session.key").exists()) {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)?;
        write("session.key", &key, true)?;
    }
    // The admin listener's bearer token (`admin.token_file`): 32 random bytes as hex.
    if !(only_missing && dir.join("admin.token").exists()) {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write("admin.token", format!("{hex}\n").as_bytes(), true)?;
    }
    for name in ["dev-idp-workforce.pem", "dev-idp-customer.pem"] {
        if !(only_missing && dir.join(name).exists()) {
            write(name, generate_pem(KeyKind::Rsa2048)?.as_bytes(), true)?;
        }
    }
    Ok(written)
}

/// How long a retired broker key stays published in `/jwks` after `keys rotate`: longer
/// than any token the broker signs lives (identity tokens ≤ 5 min, broker access and ID
/// tokens ≤ 24 h by validation), so no token outlives the key that verifies it.
pub const RETIRED_KEY_OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Retired keys older than this are deleted by the next rotation.
pub const RETIRED_KEY_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `broker-signing.pem` → `broker-signing.retired-<unix seconds>.pem` in the same directory.
fn retired_name(active: &Path, at: i64) -> PathBuf {
    let stem = active.file_stem().and_then(|s| s.to_str()).unwrap_or("broker-signing");
    active.with_file_name(format!("{stem}.retired-{at}.pem"))
}

/// The retired keys next to `active`, with the time each was retired, newest first.
pub fn retired_keys(active: &Path) -> Vec<(i64, PathBuf)> {
    let stem = active.file_stem().and_then(|s| s.to_str()).unwrap_or("broker-signing");
    let prefix = format!("{stem}.retired-");
    let dir = active.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(i64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let at = name.strip_prefix(&prefix)?.strip_suffix(".pem")?.parse().ok()?;
            Some((at, e.path()))
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

/// The retired keys still inside their publication window at `now`. A retired file
/// that cannot be loaded is skipped with a warning: the active key still works.
pub fn published_retired(active: &Path, now: i64) -> Vec<Signer> {
    retired_keys(active)
        .into_iter()
        .filter(|(at, _)| now - at < RETIRED_KEY_OVERLAP.as_secs() as i64)
        .filter_map(|(_, path)| match Signer::load(&path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "retired broker key not published");
                None
            }
        })
        .collect()
}

/// What `keys rotate` did.
#[derive(Debug)]
pub struct Rotation {
    pub new_kid: String,
    pub new_alg: &'static str,
    pub retired: Option<(String, PathBuf)>,
    pub pruned: Vec<PathBuf>,
}

/// Replaces the signing key at `active` with a new one of `kind`. The old key is kept
/// as a retired file (published for `RETIRED_KEY_OVERLAP`); retired files older than
/// `RETIRED_KEY_KEEP` are deleted. The new key is written to a temporary file and
/// renamed into place, so a running gateway (file watch, SIGHUP) never reads half a key.
pub fn rotate(active: &Path, kind: KeyKind, now: i64) -> Result<Rotation, KeyError> {
    let write_err = |path: &Path, source: std::io::Error| KeyError::Write { path: path.to_path_buf(), source };
    let new_pem = generate_pem(kind)?;
    let new_der = pem::parse(new_pem.as_bytes()).map_err(|e| KeyError::Generate(e.to_string()))?;
    let new = Signer::from_pkcs8(new_der.contents()).ok_or_else(|| KeyError::Generate("generated key unreadable".into()))?;
    let retired = if active.exists() {
        let old = Signer::load(active)?;
        let target = retired_name(active, now);
        std::fs::copy(active, &target).map_err(|e| write_err(&target, e))?;
        restrict(&target);
        Some((old.kid, target))
    } else {
        None
    };
    let tmp = active.with_extension("pem.tmp");
    std::fs::write(&tmp, new_pem.as_bytes()).map_err(|e| write_err(&tmp, e))?;
    restrict(&tmp);
    std::fs::rename(&tmp, active).map_err(|e| write_err(active, e))?;
    let mut pruned = Vec::new();
    for (at, path) in retired_keys(active) {
        if now - at > RETIRED_KEY_KEEP.as_secs() as i64 && std::fs::remove_file(&path).is_ok() {
            pruned.push(path);
        }
    }
    Ok(Rotation { new_kid: new.kid.clone(), new_alg: new.alg, retired, pruned })
}

fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half() {
        // OpenID Connect Core A.3 example (RS256).
        assert_eq!(at_hash("RS256", "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn at_hash_hash_follows_the_alg() {
        let t = "access-token";
        let half = |algo: &'static aws_lc_rs::digest::Algorithm| {
            let d = aws_lc_rs::digest::digest(algo, t.as_bytes());
            b64(&d.as_ref()[..d.as_ref().len() / 2])
        };
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
        for (alg, want) in [
            ("RS256", half(&SHA256)),
            ("ES256", half(&SHA256)),
            ("PS256", half(&SHA256)),
            ("RS384", half(&SHA384)),
            ("ES384", half(&SHA384)),
            ("PS384", half(&SHA384)),
            ("RS512", half(&SHA512)),
            ("PS512", half(&SHA512)),
            ("EdDSA", half(&SHA512)),
        ] {
            assert_eq!(at_hash(alg, t), want, "{alg}");
            let parsed: jsonwebtoken::Algorithm = alg.parse().unwrap();
            assert!(at_hash_matches(&want, t, parsed), "{alg}");
        }
        assert_eq!(at_hash("EdDSA", t).len(), 43, "32 bytes of SHA-512, base64url");
        assert!(!at_hash_matches(&at_hash("RS256", t), t, jsonwebtoken::Algorithm::EdDSA));
    }

    #[test]
    fn every_kind_signs_and_verifies() {
        for kind in [KeyKind::Es256, KeyKind::Ed25519, KeyKind::Rsa2048] {
            let pem_text = generate_pem(kind).unwrap();
            let der = pem::parse(pem_text.as_bytes()).unwrap().into_contents();
            let signer = Signer::from_pkcs8(&der).unwrap();
            let token = signer.sign_jwt("JWT", &json!({"sub": "x", "exp": 4_000_000_000u64}));
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(signer.public_jwk().clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let alg: jsonwebtoken::Algorithm = signer.alg.parse().unwrap();
            let mut v = jsonwebtoken::Validation::new(alg);
            v.validate_aud = false;
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        }
    }

    #[test]
    fn rotation_keeps_the_old_key_published_for_the_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("broker-signing.pem");
        std::fs::write(&active, generate_pem(KeyKind::Es256).unwrap()).unwrap();
        let first = Signer::load(&active).unwrap().kid;
        let now = 1_800_000_000;
        let r = rotate(&active, KeyKind::Rsa2048, now).unwrap();
        assert_eq!(r.new_alg, "RS256");
        assert_eq!(r.retired.as_ref().map(|(k, _)| k.as_str()), Some(first.as_str()));
        assert_eq!(Signer::load(&active).unwrap().kid, r.new_kid);
        let published: Vec<String> = published_retired(&active, now + 60).into_iter().map(|s| s.kid).collect();
        assert_eq!(published, vec![first.clone()]);
        let later = now + RETIRED_KEY_OVERLAP.as_secs() as i64;
        assert!(published_retired(&active, later).is_empty(), "no longer published after the overlap");
        // A rotation more than a week later deletes the old retired file.
        let r2 = rotate(&active, KeyKind::Es256, now + RETIRED_KEY_KEEP.as_secs() as i64 + 1).unwrap();
        assert_eq!(r2.pruned.len(), 1);
        assert_eq!(retired_keys(&active).len(), 1);
    }
}
