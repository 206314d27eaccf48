//! Entry points for robustness testing: each takes arbitrary bytes, feeds them to one
//! parser of untrusted input the way a request (or a config file) would, and must
//! return without panicking, whatever the bytes.
//!
//! Used by the property tests below (`cargo test --lib fuzzing`) and by the
//! `cargo fuzz` targets in `fuzz/` (docs/security.md, "Robustness testing"). Not an API: the names may
//! change with the parsers they exercise.

use http::{HeaderMap, HeaderValue};

/// A bearer token as the request path sees it: the `Authorization` header through
/// `credential::extract`, then the compact-JWS split, base64url and JSON decoding,
/// the JOSE header rules and the time claims (what `Registry::verify` runs before it
/// looks for a key). The raw bytes are also parsed as a token directly.
pub fn token(data: &[u8]) {
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v);
        if let Ok(crate::credential::Credential::Bearer(t)) = crate::credential::extract(&h, "idfabric_session") {
            parse_token(t);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        parse_token(s);
    }
}

fn parse_token(t: &str) {
    use crate::providers::jwt;
    let _ = crate::providers::token_hash(t);
    if let Ok(parsed) = jwt::parse(t) {
        let _ = jwt::check_times(&parsed.claims, crate::providers::now_secs(), 60);
        for c in ["iss", "sub", "aud", "tid", "azp", "nonce"] {
            let _ = parsed.claims.str(c);
        }
    }
}

/// `Cookie` headers (one per line of `data`) through credential extraction and the
/// removal of idfabric's own cookies before the upstream.
pub fn cookie(data: &[u8]) {
    let mut h = HeaderMap::new();
    let mut req = pingora::http::RequestHeader::build("GET", b"/", None).expect("a static request line");
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(http::header::COOKIE, v.clone());
            let _ = req.append_header(http::header::COOKIE, v);
        }
    }
    let _ = crate::credential::extract(&h, "idfabric_session");
    let _ = crate::credential::extract(&h, "__Host-idfabric_session");
    let _ = crate::credential::session_cookie(&h, "__Host-idfabric_session");
    crate::gateway::strip_own_cookies(&mut req, "idfabric_session");
}

/// A header name, as the identity-header stripping judges it.
pub fn header_name(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::gateway::is_identity_header(s);
    }
}

/// Forwarding headers from a trusted proxy (`crate::forwarded::derive`): each line of
/// `data` is one header line, its first byte choosing `X-Forwarded-For`, `-Proto`,
/// `-Host`, `-Port` or `Forwarded`. The result must be a usable origin.
pub fn forwarded(data: &[u8]) {
    const NAMES: [&str; 5] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded"];
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Ok(v) = HeaderValue::from_bytes(&line[1..]) {
            h.append(NAMES[line[0] as usize % NAMES.len()], v);
        }
    }
    let trusted = crate::forwarded::TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("a CIDR"), "fd00::/8".parse().expect("a CIDR")]);
    let o = crate::forwarded::derive(Some([10, 0, 0, 1].into()), false, "app.test", &h, &trusted, None);
    let _ = (o.origin(), o.host(), o.port(), o.x_forwarded_for());
    assert!(o.authority.parse::<http::uri::Authority>().is_ok(), "{}", o.authority);
}

/// `routes.yaml` and one provider file (`providers/p.yaml`, enabled when the routes
/// name it) through the whole loader: YAML, `${ENV}` expansion, strict structs and
/// validation. The files go to a fresh temporary directory (the loader reads paths).
pub fn config(routes: &[u8], provider: &[u8]) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("idfabric-fuzz-{}-{n}", std::process::id()));
    if std::fs::create_dir_all(dir.join("providers")).is_err() {
        return;
    }
    let written = std::fs::write(dir.join("routes.yaml"), routes).is_ok()
        && std::fs::write(dir.join("providers/p.yaml"), provider).is_ok();
    if written {
        let _ = crate::config::load(&dir.join("routes.yaml"), crate::providers::KINDS);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;

    /// Small JSON-ish values: enough structure to get past `serde_json` sometimes.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[a-zA-Z0-9 _:/.\\-]{0,12}".prop_map(|s| format!("{s:?}")),
            Just("\"\\ud800\"".to_string()),
            Just("1e999".to_string()),
        ];
        let keys = prop_oneof![
            Just("alg"), Just("kid"), Just("typ"), Just("crit"), Just("jku"), Just("jwk"), Just("enc"),
            Just("iss"), Just("sub"), Just("aud"), Just("exp"), Just("nbf"), Just("iat"), Just("tid"),
        ];
        leaf.prop_recursive(3, 24, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// A valid-looking config to mutate (its provider file is `p`).
    const ROUTES: &str = "listen: { http: 127.0.0.1:8080 }\nadmin: { listen: 127.0.0.1:9090, token: \"${FUZZ_TOKEN:-0123456789abcdef}\" }\n\
        providers: [p]\nsession: { store: memory, ttl: 8h }\n\
        broker:\n  issuer: http://127.0.0.1:8080/broker\n  signing_key: certs/b.pem\n  clients:\n\
        \x20   - { client_id: c, client_secret: \"12345678\", redirect_uris: [http://rp.test/cb], introspect: true }\n\
        routes:\n  - name: app\n    match: { host: app.test, path_prefix: / }\n    upstream: [127.0.0.1:3000]\n\
        \x20   require: { groups_any: [hr], mfa: true }\n";
    const PROVIDER: &str = "id: p\nkind: oidc\npopulation: workforce\nissuer: https://idp.example/\n\
        audiences: [api://x]\nclient_id: x\nclaims: { groups: groups }\n";

    /// `base` with `insert` spliced in at a byte position (on a char boundary).
    fn splice(base: &str, at: usize, cut: usize, insert: &str) -> String {
        let mut at = at % (base.len() + 1);
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &base[..at], insert, &base[end..])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn tokens_never_panic_on_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
            token(&data);
        }

        #[test]
        fn tokens_never_panic_on_jws_shapes(h in json_text(), p in json_text(), sig in "[A-Za-z0-9_\\-]{0,90}", scheme in "(Bearer|bearer|BEARER|Basic|) ?") {
            let compact = format!("{}.{}.{sig}", b64(&h), b64(&p));
            token(compact.as_bytes());
            token(format!("{scheme}{compact}").as_bytes());
            token(format!("Bearer {}.{}.{sig}.x", b64(&h), b64(&p)).as_bytes());
        }

        #[test]
        fn cookies_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            cookie(&data);
        }

        #[test]
        fn cookie_shapes_never_panic(pairs in prop::collection::vec(("(idfabric_session|__Host-idfabric_session|idfabric_idp|[a-z=;]{0,6})", "[ -~]{0,20}"), 0..6)) {
            let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            cookie(line.join("; ").as_bytes());
            cookie(line.join("\n").as_bytes());
        }

        #[test]
        fn header_names_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
            header_name(&data);
        }

        #[test]
        fn forwarding_headers_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            forwarded(&data);
        }

        #[test]
        fn forwarding_header_shapes_never_panic(lines in prop::collection::vec(("[0-4]", "[ -~]{0,40}|(for|proto|host|by)=(\"?[\\[\\]0-9a-f:._,;=\"]{0,30}\"?;?){1,3}"), 0..6)) {
            let text: Vec<String> = lines.iter().map(|(k, v)| format!("{k}{v}")).collect();
            forwarded(text.join("\n").as_bytes());
        }
    }

    proptest! {
        // Each case writes two files and runs the whole loader: fewer cases.
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn config_never_panics_on_bytes(routes in prop::collection::vec(any::<u8>(), 0..512), provider in prop::collection::vec(any::<u8>(), 0..256)) {
            config(&routes, &provider);
            config(&routes, PROVIDER.as_bytes());
        }

        #[test]
        fn config_never_panics_on_mutations(
            at in any::<usize>(), cut in 0usize..40,
            insert in prop_oneof![Just(String::new()), "[ -~\\n]{0,30}", Just("${".to_string()), Just("{ [".to_string()), Just("\t".to_string()), Just("\u{feff}".to_string()), Just(": &a *a".to_string()), Just("!!binary ".to_string())],
            in_provider in any::<bool>(),
        ) {
            if in_provider {
                config(ROUTES.as_bytes(), splice(PROVIDER, at, cut, &insert).as_bytes());
            } else {
                config(splice(ROUTES, at, cut, &insert).as_bytes(), PROVIDER.as_bytes());
            }
        }
    }

    /// The mutation base itself loads, so mutations start from a valid config.
    #[test]
    fn the_mutation_base_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
        std::fs::write(dir.path().join("providers/p.yaml"), PROVIDER).unwrap();
        if let Err(e) = crate::config::load(&dir.path().join("routes.yaml"), crate::providers::KINDS) {
            panic!("{e}");
        }
    }
}
