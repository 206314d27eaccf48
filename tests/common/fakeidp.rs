//! A stand-in for an upstream identity provider on loopback: serves an OpenID
//! discovery document and a JWKS over real HTTP, with keys the test rotates and an
//! outage switch. Tokens for it are signed in the test with `idfabric::keys::Signer`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idfabric::keys::{generate_pem, KeyKind, Signer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    keys: Vec<Value>,
    down: bool,
    garbage: bool,
    hits: HashMap<String, usize>,
    /// Overrides the discovery `issuer` (to test mismatches); default: the real issuer.
    issuer_override: Option<String>,
    /// Every answer waits this long first (a slow provider).
    delay: std::time::Duration,
    /// Every request answers this status (e.g. 500) while set.
    status: Option<u16>,
}

pub struct FakeIdp {
    pub port: u16,
    /// Base URL; the default issuer is `{base}` (tests may use a path-suffixed issuer).
    pub base: String,
    pub issuer: String,
    state: Arc<Mutex<State>>,
}

/// A fresh signing key of the given kind.
pub fn new_signer(kind: KeyKind) -> Signer {
    let pem_text = generate_pem(kind).unwrap();
    Signer::from_pkcs8(&pem::parse(pem_text.as_bytes()).unwrap().into_contents()).unwrap()
}

impl FakeIdp {
    /// Starts serving `{issuer}/.well-known/openid-configuration` and `{base}/keys`, where
    /// `issuer = base + issuer_path` (e.g. "/oauth2/default" for an Okta custom AS).
    pub fn start(issuer_path: &str) -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}{issuer_path}");
        let state = Arc::new(Mutex::new(State::default()));
        let (st, iss, b) = (state.clone(), issuer.clone(), base.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, iss, b) = (st.clone(), iss.clone(), b.clone());
                std::thread::spawn(move || serve(stream, &st, &iss, &b));
            }
        });
        FakeIdp { port, base, issuer, state }
    }

    /// Publishes exactly these keys (replacing the previous set).
    pub fn set_keys(&self, signers: &[&Signer]) {
        self.state.lock().unwrap().keys = signers.iter().map(|s| s.public_jwk().clone()).collect();
    }

    /// Publishes raw JWK values (for malformed or symmetric keys).
    pub fn set_raw_keys(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    /// Every request answers 503 while down.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Every request answers 200 with a body that is not JSON.
    pub fn set_garbage(&self, garbage: bool) {
        self.state.lock().unwrap().garbage = garbage;
    }

    /// Every answer is delayed by `d` (a provider that hangs).
    pub fn set_delay(&self, d: std::time::Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Every request answers `status` (e.g. 500) while set.
    pub fn set_status(&self, status: Option<u16>) {
        self.state.lock().unwrap().status = status;
    }

    pub fn set_discovery_issuer(&self, issuer: Option<String>) {
        self.state.lock().unwrap().issuer_override = issuer;
    }

    /// How many times `path` was requested.
    pub fn hits(&self, path: &str) -> usize {
        *self.state.lock().unwrap().hits.get(path).unwrap_or(&0)
    }

    pub fn jwks_hits(&self) -> usize {
        self.hits("/keys")
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/keys", self.base)
    }
}

fn serve(mut stream: std::net::TcpStream, st: &Mutex<State>, issuer: &str, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let delay = st.lock().unwrap().delay;
    std::thread::sleep(delay);
    let (status, text) = {
        let mut s = st.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        let forced = s.status;
        let discovery_path = format!("{}/.well-known/openid-configuration", issuer.strip_prefix(base).unwrap_or(""));
        if let Some(code) = forced {
            (code, "{\"error\":\"server_error\"}".to_string())
        } else if s.down {
            (503, "{\"error\":\"down\"}".to_string())
        } else if s.garbage {
            (200, "<html>this is not json</html>".to_string())
        } else if path == discovery_path {
            let iss = s.issuer_override.clone().unwrap_or(issuer.to_string());
            (
                200,
                json!({"issuer": iss, "jwks_uri": format!("{base}/keys"),
                          "authorization_endpoint": format!("{base}/authorize"),
                          "token_endpoint": format!("{base}/token")})
                .to_string(),
            )
        } else if path == "/keys" {
            (200, json!({"keys": s.keys}).to_string())
        } else {
            (404, "{}".to_string())
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Signs `claims` under an arbitrary JOSE header with `signer` (for attack tests:
/// the header may lie about `alg`, carry `jku`, `crit`, …).
pub fn sign_with_header(signer: &Signer, header: &Value, claims: &Value) -> String {
    let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An unsigned token (`alg: none`).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}
