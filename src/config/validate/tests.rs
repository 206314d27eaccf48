use super::*;

fn load(path: &Path) -> Result<Config, ConfigErrors> {
    super::load(path, crate::providers::KINDS)
}

fn dir_with(routes: &str, providers: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("providers")).unwrap();
    std::fs::write(d.path().join("routes.yaml"), routes).unwrap();
    for (name, text) in providers {
        std::fs::write(d.path().join("providers").join(name), text).unwrap();
    }
    d
}

const OKTA: &str = "id: corp-okta\nkind: okta\nissuer: https://example.okta.com/oauth2/default\naudiences: [api://default]\n";

#[test]
fn a_typo_is_reported_with_file_line_and_key() {
    let d = dir_with(
        "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes:\n  - name: a\n    upstrem: [127.0.0.1:1]\n",
        &[("okta.yaml", OKTA)],
    );
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(5));
    assert!(errs[0].message.contains("unknown field `upstrem`"), "{}", errs[0].message);
    assert!(errs[0].key.as_deref().unwrap_or("").starts_with("routes[0]"), "{:?}", errs[0].key);
}

#[test]
fn unknown_keys_are_rejected_per_kind() {
    // `tenants` belongs to entra, not okta.
    let d = dir_with(
        "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n",
        &[("okta.yaml", &format!("{OKTA}tenants: [x]\n"))],
    );
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert!(errs[0].message.contains("unknown field `tenants`"), "{errs:?}");
    assert!(errs[0].file.ends_with("okta.yaml"));
    assert_eq!(errs[0].line, Some(5));
}

#[test]
fn every_problem_is_reported_at_once() {
    let d = dir_with(
        "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta, missing]\nroutes:\n  - name: a\n    auth: sometimes\n    upstream: [127.0.0.1:1]\n  - name: b\n    upstream: []\n",
        &[("okta.yaml", OKTA)],
    );
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("no file") && t.contains("missing")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("`sometimes`")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("at least one address")), "{text:?}");
}

#[test]
fn missing_env_var_names_file_key_and_variable() {
    let d = dir_with(
        "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n",
        &[("okta.yaml", "id: corp-okta\nkind: okta\nissuer: https://example.okta.com/oauth2/default\naudiences: [api://default]\nclient_id: ${IDFABRIC_TEST_SURELY_UNSET}\n")],
    );
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    let e = &errs[0];
    assert!(e.file.ends_with("okta.yaml"));
    assert_eq!(e.key.as_deref(), Some("client_id"));
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("IDFABRIC_TEST_SURELY_UNSET"), "{e}");
}

#[test]
fn disabled_templates_with_unset_variables_are_ignored() {
    let d = dir_with(
        "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n",
        &[("okta.yaml", OKTA), ("entra.yaml", "id: corp-entra\nkind: entra\nissuer: https://login.microsoftonline.com/${UNSET_TENANT}/v2.0\n")],
    );
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert_eq!(c.providers.len(), 1);
}

#[test]
fn entra_multi_tenant_needs_an_allow_list() {
    let entra = "id: e\nkind: entra\nissuer: https://login.microsoftonline.com/organizations/v2.0\naudiences: [api://x]\n";
    let d = dir_with("listen: { http: 127.0.0.1:8080 }\nproviders: [e]\nroutes: []\n", &[("e.yaml", entra)]);
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert!(errs.iter().any(|e| e.key.as_deref() == Some("tenants")), "{errs:?}");
    let ok = format!("{entra}tenants: ['*']\n");
    let d = dir_with("listen: { http: 127.0.0.1:8080 }\nproviders: [e]\nroutes: []\n", &[("e.yaml", &ok)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert_eq!(c.providers[0].issuer, "https://login.microsoftonline.com/{tenantid}/v2.0");
}

#[test]
fn plain_http_issuers_only_on_loopback() {
    let okta = "id: corp-okta\nkind: okta\nissuer: http://example.okta.com/oauth2/default\naudiences: [a]\n";
    let d = dir_with("listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n", &[("o.yaml", okta)]);
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert!(errs[0].message.contains("must be https"), "{errs:?}");
}

#[test]
fn path_prefixes_must_be_canonical() {
    let bad = ["/static/../admin", "/a//b", "/admin%2fx", "/app;x", "/a\\\\b", "/%61dmin", "/a/./b", "/caf%c3%a9", "/%2e%2e"];
    let mut routes = String::from("listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes:\n");
    for (i, p) in bad.iter().enumerate() {
        routes.push_str(&format!("  - {{ name: r{i}, match: {{ path_prefix: \"{p}\" }}, auth: none, upstream: [127.0.0.1:1] }}\n"));
    }
    routes.push_str("  - { name: ok, match: { path_prefix: /caf%C3%A9/ }, auth: none, case_sensitive: true, path_params: true, upstream: [127.0.0.1:1] }\n");
    routes.push_str("  - { name: ci, match: { path_prefix: /%C3%A9cole }, auth: none, upstream: [127.0.0.1:1] }\n");
    let d = dir_with(&routes, &[("okta.yaml", OKTA)]);
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), bad.len() + 1, "{text:?}");
    assert!(text.iter().any(|t| t.contains("set `case_sensitive: true`")), "{text:?}");
    assert!(text.iter().all(|t| t.contains("path_prefix")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("write it as `/admin`")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("`;`")), "{text:?}");
}

#[test]
fn admin_accepts_the_address_or_a_map_and_introspect_is_for_confidential_clients() {
    let base = "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n";
    let d = dir_with(&format!("{base}admin: 127.0.0.1:9090\n"), &[("okta.yaml", OKTA)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(c.admin_guard.token.is_none(), "the address form has no token: guarded paths stay closed");
    let d = dir_with(
        &format!("{base}admin: {{ listen: 127.0.0.1:9090, token: abcdefghijklmnop, hosts: [Admin.Example], ops_listen: 127.0.0.1:9091 }}\n"),
        &[("okta.yaml", OKTA)],
    );
    let c = load(&d.path().join("routes.yaml")).unwrap();
    let g = &c.admin_guard;
    assert!(g.token.as_ref().is_some_and(|t| t.matches("abcdefghijklmnop") && !t.matches("abcdefghijklmnoq")));
    assert_eq!((g.hosts.as_slice(), g.ops_listen), (&["admin.example".to_string()][..], Some("127.0.0.1:9091".parse().unwrap())));
    // A token file: the trailing newline is not part of the token.
    let d = dir_with(&format!("{base}admin: {{ listen: 127.0.0.1:9090, token_file: t }}\n"), &[("okta.yaml", OKTA)]);
    std::fs::write(d.path().join("t"), "0123456789abcdef0123\n").unwrap();
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert!(c.admin_guard.token.unwrap().matches("0123456789abcdef0123"));
    // introspect: default false, true for a confidential client, an error for a public one.
    let broker = |extra: &str| {
        format!(
            "{base}broker:\n  issuer: http://127.0.0.1:8080/broker\n  signing_key: k.pem\n  clients:\n\
             \x20   - {{ client_id: rp, client_secret: \"12345678\", redirect_uris: [http://rp.test/cb] }}\n\
             \x20   - {{ client_id: rs, client_secret: \"12345678\", grant_types: [client_credentials], introspect: true }}\n{extra}"
        )
    };
    let d = dir_with(&broker(""), &[("okta.yaml", OKTA)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    let introspect: Vec<bool> = c.broker.unwrap().clients.iter().map(|c| c.introspect).collect();
    assert_eq!(introspect, [false, true]);
    let d = dir_with(
        &broker("    - { client_id: spa, public: true, redirect_uris: [http://spa.test/cb], introspect: true }\n"),
        &[("okta.yaml", OKTA)],
    );
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert!(errs.iter().any(|e| e.message.contains("cannot introspect")), "{errs:?}");
    // backchannel_logout_uri: https, or http on loopback; checked with the client's line.
    let d = dir_with(
        &broker("    - { client_id: bc, client_secret: \"12345678\", redirect_uris: [http://bc.test/cb], backchannel_logout_uri: \"http://127.0.0.1:9/bc\" }\n"),
        &[("okta.yaml", OKTA)],
    );
    let c = load(&d.path().join("routes.yaml")).unwrap().broker.unwrap();
    assert_eq!(c.clients[2].backchannel_logout_uri.as_deref(), Some("http://127.0.0.1:9/bc"));
    assert!(c.clients[2].backchannel_logout_session_required && c.clients[0].backchannel_logout_uri.is_none());
    for bad in ["http://rp.example/bc", "/bc", "https://rp.example/bc#x", "ftp://rp.example/bc"] {
        let d = dir_with(
            &broker(&format!("    - {{ client_id: bc, client_secret: \"12345678\", redirect_uris: [http://bc.test/cb], backchannel_logout_uri: \"{bad}\" }}\n")),
            &[("okta.yaml", OKTA)],
        );
        let errs: Vec<String> = load(&d.path().join("routes.yaml")).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        assert!(errs.iter().any(|e| e.contains("backchannel_logout_uri") && e.contains(":10:")), "{bad}: {errs:?}");
    }
}

#[test]
fn login_limits_default_and_are_checked() {
    let routes = |session: &str| format!("listen: {{ http: 127.0.0.1:8080 }}\nproviders: [corp-okta]\nsession: {session}\nroutes: []\n");
    let d = dir_with(&routes("{ store: memory }"), &[("okta.yaml", OKTA)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert_eq!(c.session.login_limits, crate::config::LoginLimits { per_client: 32, total: 20_000, rate_per_minute: 300 });
    let d = dir_with(&routes("{ login_limits: { per_client: 5, rate_per_minute: 10 } }"), &[("okta.yaml", OKTA)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    assert_eq!(c.session.login_limits, crate::config::LoginLimits { per_client: 5, total: 20_000, rate_per_minute: 10 });
    let d = dir_with(&routes("{ login_limits: { per_client: 0, total: 10, rate_per_minute: 200000, burst: 3 } }"), &[("okta.yaml", OKTA)]);
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    assert!(errs.iter().any(|e| e.message.contains("unknown field `burst`")), "{errs:?}");
    let d = dir_with(&routes("{ login_limits: { per_client: 0, total: 10, rate_per_minute: 200000 } }"), &[("okta.yaml", OKTA)]);
    let text: Vec<String> = load(&d.path().join("routes.yaml")).unwrap_err().0.iter().map(|e| e.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("per_client") && t.contains("`0`")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("rate_per_minute") && t.contains("`200000`")), "{text:?}");
    let d = dir_with(&routes("{ login_limits: { per_client: 50, total: 10 } }"), &[("okta.yaml", OKTA)]);
    let text: Vec<String> = load(&d.path().join("routes.yaml")).unwrap_err().0.iter().map(|e| e.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("more than total")), "{text:?}");
}

#[test]
fn cors_preflight_takes_allow_or_authenticate_and_needs_a_default_upstream() {
    let base = "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes:\n";
    let ok = format!(
        "{base}  - {{ name: a, match: {{ host: a.test }}, cors_preflight: allow, upstream: [127.0.0.1:1] }}\n\
         \x20 - {{ name: b, match: {{ host: b.test }}, cors_preflight: authenticate, upstream: [127.0.0.1:1] }}\n\
         \x20 - {{ name: c, match: {{ host: c.test }}, upstream: [127.0.0.1:1] }}\n"
    );
    let d = dir_with(&ok, &[("okta.yaml", OKTA)]);
    let c = load(&d.path().join("routes.yaml")).unwrap();
    let modes: Vec<CorsPreflight> = c.routes.iter().map(|r| r.cors_preflight).collect();
    assert_eq!(modes, [CorsPreflight::Allow, CorsPreflight::Authenticate, CorsPreflight::Authenticate]);
    let bad = format!(
        "{base}  - {{ name: a, cors_preflight: open, upstream: [127.0.0.1:1] }}\n\
         \x20 - {{ name: b, cors_preflight: allow, by_population: {{ workforce: {{ upstream: [127.0.0.1:1] }} }} }}\n"
    );
    let d = dir_with(&bad, &[("okta.yaml", OKTA)]);
    let errs = load(&d.path().join("routes.yaml")).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{text:?}");
    assert!(text.iter().all(|t| t.contains("cors_preflight")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("`open` is not one of allow, authenticate")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("needs a default `upstream`")), "{text:?}");
}

#[test]
fn a_provider_scim_section_is_validated_at_load() {
    let base = "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes: []\n";
    let with = |scim: &str| dir_with(base, &[("okta.yaml", &format!("{OKTA}scim: {scim}\n"))]);
    let d = with("{ token: abcdefghijklmnopqrst }");
    let c = load(&d.path().join("routes.yaml")).unwrap();
    let s = c.providers[0].scim.as_ref().unwrap();
    assert!(s.matches("abcdefghijklmnopqrst") && !s.matches("abcdefghijklmnopqrsu"));
    assert_eq!(s.subject, crate::config::ScimSubject::ExternalId);
    assert!(!format!("{s:?}").contains("abcdefghijklmnopqrst"), "the token never shows in Debug");
    let d = with("{ token_file: scim.token, subject: userName }");
    std::fs::write(d.path().join("scim.token"), "0123456789abcdef0123\n").unwrap();
    let c = load(&d.path().join("routes.yaml")).unwrap();
    let s = c.providers[0].scim.as_ref().unwrap();
    assert!(s.matches("0123456789abcdef0123"));
    assert_eq!(s.subject, crate::config::ScimSubject::UserName);
    for (bad, says) in [
        ("{ token: short }", "at least 16"),
        ("{ token: abcdefghijklmnopqrst, token_file: x }", "not both"),
        ("{ subject: userName }", "set `token_file` or `token`"),
        ("{ token: abcdefghijklmnopqrst, subject: email }", "externalId"),
        ("{ token_file: missing.token }", "cannot read"),
        ("{ token: abcdefghijklmnopqrst, tokn: x }", "tokn"),
    ] {
        let d = with(bad);
        let e = load(&d.path().join("routes.yaml")).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
