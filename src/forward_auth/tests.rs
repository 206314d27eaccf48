use super::*;

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn parse(method: &str, rest: &str, query: Option<&str>, list: &[(&str, &str)]) -> Result<Original, Refusal> {
    let h = headers(list);
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    original(&CheckRequest { method: &m, rest, query, headers: &h, tls: false, client: None })
}

/// (source, method, scheme, host, canonical path and query)
fn seen(o: &Original) -> (Source, &str, bool, &str, String) {
    (o.source, o.method.as_str(), o.https, o.host.as_str(), o.uri.to_string())
}

#[test]
fn each_proxy_convention_names_the_original_request() {
    // ingress-nginx: the absolute URL wins over Host (the auth service's own name).
    let o = parse(
        "GET",
        "",
        None,
        &[("host", "idfabric.svc"), ("x-original-url", "https://App.Example:8443/a/../b?x=1"), ("x-original-method", "POST")],
    )
    .unwrap();
    assert_eq!(seen(&o), (Source::OriginalUrl, "POST", true, "App.Example:8443", "/b?x=1".into()));
    // Traefik / Caddy.
    let o = parse(
        "GET",
        "",
        None,
        &[
            ("host", "idfabric:8080"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-uri", "//app/%61?q"),
            ("x-forwarded-method", "DELETE"),
        ],
    )
    .unwrap();
    assert_eq!(seen(&o), (Source::ForwardedUri, "DELETE", true, "app.example", "/app/a?q".into()));
    // nginx auth_request: Host set to the original, method named, scheme from the check.
    let o = parse("GET", "", None, &[("host", "app.example"), ("x-original-uri", "/r"), ("x-original-method", "PUT")]).unwrap();
    assert_eq!(seen(&o), (Source::OriginalUri, "PUT", false, "app.example", "/r".into()));
    // Envoy: the appended path, the check's own query, method and authority.
    let o = parse("PATCH", "/app/x", Some("y=1"), &[("host", "app.example"), ("x-forwarded-proto", "https")]).unwrap();
    assert_eq!(seen(&o), (Source::CheckPath, "PATCH", true, "app.example", "/app/x?y=1".into()));
    // The check path alone asks about `/`; its query is the check's own options.
    let o = parse("GET", "", Some("redirect=1"), &[("host", "app.example")]).unwrap();
    assert_eq!(seen(&o), (Source::CheckPath, "GET", false, "app.example", "/".into()));
}

#[test]
fn headers_that_agree_may_all_be_present() {
    let o = parse(
        "GET",
        "/r",
        None,
        &[
            ("host", "app.example"),
            ("x-original-url", "http://app.example/r"),
            ("x-forwarded-uri", "/r"),
            ("x-original-uri", "/./r"),
            ("x-original-method", "GET"),
            ("x-forwarded-method", "GET"),
        ],
    )
    .unwrap();
    assert_eq!(seen(&o), (Source::OriginalUrl, "GET", false, "app.example", "/r".into()));
}

#[test]
fn a_header_the_proxy_did_not_set_cannot_change_the_request_judged() {
    let conflict = Err(Refusal::InvalidTarget(TargetProblem::ForwardedConflict));
    let cases: &[(&str, &str, &[(&str, &str)])] = &[
        // Traefik passes the client's X-Original-URL along with its own headers.
        ("GET", "", &[("host", "a"), ("x-forwarded-host", "app.example"), ("x-forwarded-uri", "/admin"), ("x-original-url", "http://app.example/public")]),
        // The same path on another host.
        ("GET", "", &[("host", "a"), ("x-forwarded-host", "app.example"), ("x-forwarded-uri", "/admin"), ("x-original-url", "http://public.example/admin")]),
        // nginx with a client-sent X-Forwarded-Uri.
        ("GET", "", &[("host", "app.example"), ("x-original-uri", "/admin"), ("x-forwarded-uri", "/public")]),
        // Envoy with a client-sent header naming another path, or another host.
        ("GET", "/admin", &[("host", "app.example"), ("x-original-uri", "/public")]),
        ("GET", "/admin", &[("host", "app.example"), ("x-forwarded-host", "public.example"), ("x-forwarded-uri", "/admin")]),
        // Another query.
        ("GET", "", &[("host", "app.example"), ("x-original-uri", "/a?x=1"), ("x-forwarded-uri", "/a?x=2")]),
        // Methods that disagree, or a named method that is not Envoy's own.
        ("GET", "", &[("host", "app.example"), ("x-original-uri", "/a"), ("x-original-method", "GET"), ("x-forwarded-method", "OPTIONS")]),
        ("GET", "/a", &[("host", "app.example"), ("x-original-method", "OPTIONS")]),
        // A repeated header.
        ("GET", "", &[("host", "app.example"), ("x-original-uri", "/a"), ("x-original-uri", "/b")]),
        ("GET", "", &[("host", "app.example"), ("x-forwarded-uri", "/a"), ("x-forwarded-method", "GET"), ("x-forwarded-method", "GET")]),
    ];
    for (method, rest, list) in cases {
        assert_eq!(parse(method, rest, None, list).map(|o| seen(&o).4), conflict.clone(), "{rest} {list:?}");
    }
}

#[test]
fn malformed_forwarded_values_are_refused_with_their_class() {
    use TargetProblem::*;
    let cases: &[(&[(&str, &str)], Refusal)] = &[
        (&[("x-original-url", "/relative")], Refusal::InvalidTarget(ForwardedUrl)),
        (&[("x-original-url", "ftp://app.example/")], Refusal::InvalidTarget(ForwardedUrl)),
        (&[("x-original-url", "https://user@app.example/")], Refusal::InvalidTarget(ForwardedUrl)),
        (&[("host", "a"), ("x-forwarded-uri", "app/x")], Refusal::InvalidTarget(ForwardedUri)),
        (&[("host", "a"), ("x-original-uri", "http://a/x")], Refusal::InvalidTarget(ForwardedUri)),
        (&[("host", "a, b"), ("x-original-uri", "/x")], Refusal::InvalidTarget(ForwardedHost)),
        (&[("x-forwarded-host", "a/b"), ("x-forwarded-uri", "/x")], Refusal::InvalidTarget(ForwardedHost)),
        (&[("x-original-uri", "/x")], Refusal::InvalidTarget(NoHost)),
        (&[("host", "a"), ("x-original-uri", "/x"), ("x-forwarded-proto", "gopher")], Refusal::InvalidTarget(ForwardedProto)),
        (&[("host", "a"), ("x-original-uri", "/x"), ("x-original-method", "G E T")], Refusal::InvalidTarget(ForwardedMethod)),
        (&[("host", "a"), ("x-original-uri", "/static/%2e%2e/admin")], Refusal::InvalidPath(PathProblem::EncodedDotSegment)),
        (&[("host", "a"), ("x-forwarded-uri", "/a%2fb")], Refusal::InvalidPath(PathProblem::EncodedSlash)),
    ];
    for (list, want) in cases {
        assert_eq!(parse("GET", "", None, list).map(|o| seen(&o).4).unwrap_err(), *want, "{list:?}");
    }
    // The appended path goes through the same canonicalisation.
    let r = parse("GET", "/static/%2e%2e/admin", None, &[("host", "a")]).unwrap_err();
    assert_eq!(r.reason(), "invalid_path");
    let o = parse("GET", "/static/../admin/", None, &[("host", "a")]).unwrap();
    assert_eq!(o.uri.path(), "/admin/");
}

#[test]
fn the_check_path_and_its_spellings() {
    assert_eq!(below_check_path("/.idfabric/auth"), Some(""));
    assert_eq!(below_check_path("/.idfabric/auth/app/x"), Some("/app/x"));
    assert_eq!(below_check_path("/.idfabric/auth/"), Some("/"));
    assert_eq!(below_check_path("/.idfabric/authx"), None);
    assert_eq!(below_check_path("/.IDFABRIC/auth"), None);
    assert_eq!(below_check_path("/.idfabric/me"), None);
}

#[test]
fn who_gets_a_redirect_and_who_a_header() {
    let h = HeaderMap::new();
    let get = Method::GET;
    let req = |rest, query| CheckRequest { method: &get, rest, query, headers: &h, tls: false, client: None };
    for (rest, query, source, want) in [
        ("", None, Source::OriginalUri, false),
        ("", None, Source::OriginalUrl, false),
        ("", None, Source::ForwardedUri, true),
        ("/x", None, Source::CheckPath, true),
        ("", Some("redirect=1"), Source::OriginalUri, true),
        ("", Some("redirect=0"), Source::ForwardedUri, false),
        // An appended path's query is the original request's, never an option.
        ("/x", Some("redirect=0"), Source::CheckPath, true),
    ] {
        assert_eq!(redirects(&req(rest, query), source), want, "{rest:?} {query:?} {source:?}");
    }
}

#[test]
fn oauth2_proxy_aliases_and_no_access_token() {
    assert_eq!(alias("x-identity-sub"), Some("x-auth-request-user"));
    assert_eq!(alias("x-identity-email"), Some("x-auth-request-email"));
    assert_eq!(alias("x-identity-groups"), Some("x-auth-request-groups"));
    assert_eq!(alias("x-identity-token"), None, "the identity token has no alias: no X-Auth-Request-Access-Token");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn uri() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just("/a".to_string()),
            Just("/a?x=1".to_string()),
            Just("/b/../a".to_string()),
            Just("//a".to_string()),
            Just("/%61".to_string()),
            Just("/a%2fb".to_string()),
            Just("a".to_string()),
            "/[a-c./%;?=]{0,8}",
        ])
    }

    fn host() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![Just("app.test".to_string()), Just("APP.test:8080".to_string()), Just("other.test".to_string()), Just("a, b".to_string())])
    }

    fn method() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![Just("GET".to_string()), Just("OPTIONS".to_string()), Just("get".to_string())])
    }

    /// The canonical path and query a `/path?query` names, if it has one.
    fn canonical(target: &str) -> Option<(String, Option<String>)> {
        let (p, q) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        Some((canon::canonicalize(p).ok()?.path().to_string(), q))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever mix of conventions a check carries, it never panics, and a request it
        /// accepts is the one every convention present names: no header can change it.
        #[test]
        fn every_convention_present_names_the_request_judged(
            url_host in host(), url_path in uri(), fwd in uri(), orig in uri(), rest in uri(),
            host_header in host(), xfh in host(), m1 in method(), m2 in method(), check_options in any::<bool>(),
        ) {
            let mut list: Vec<(&str, String)> = Vec::new();
            // A URL's path starts with `/` (else it would run into the host).
            let url_path = url_path.filter(|p| p.starts_with('/'));
            if let (Some(h), Some(p)) = (&url_host, &url_path) {
                list.push(("x-original-url", format!("https://{h}{p}")));
            }
            for (name, v) in [("x-forwarded-uri", &fwd), ("x-original-uri", &orig), ("host", &host_header), ("x-forwarded-host", &xfh), ("x-original-method", &m1), ("x-forwarded-method", &m2)] {
                if let Some(v) = v {
                    list.push((name, v.clone()));
                }
            }
            let rest = rest.filter(|r| r.starts_with('/') && !check_options).unwrap_or_default();
            let (path, query) = rest.split_once('?').map(|(p, q)| (p.to_string(), Some(q))).unwrap_or((rest.clone(), None));
            let pairs: Vec<(&str, &str)> = list.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let Ok(o) = parse("GET", &path, query, &pairs) else { return Ok(()) };
            let judged = (o.path.path().to_string(), o.uri.query().map(str::to_string));
            for named in [url_path.filter(|_| url_host.is_some()), fwd, orig, (!path.is_empty()).then(|| rest.clone())].into_iter().flatten() {
                prop_assert_eq!(canonical(&named), Some(judged.clone()), "{:?} judged as {:?}", pairs, judged);
            }
            for m in [m1, m2].into_iter().flatten() {
                prop_assert_eq!(m.as_str(), o.method.as_str());
            }
            if !path.is_empty() {
                prop_assert_eq!(o.method.as_str(), "GET", "an Envoy check keeps its own method");
            }
        }
    }
}
