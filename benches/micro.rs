//! Criterion micro-benchmarks of idfabric's request hot path, through the
//! library API only: route match, credential extraction, verification (thread-local hot
//! slot / shared cache / uncached per dev shape), policy decision, header propagation and
//! `X-Identity-Token` minting (cached and fresh), plus the whole `pipeline::admit`.
//!
//! ```text
//! cargo bench --bench micro                 # everything
//! cargo bench --bench micro -- verify       # one group
//! cargo bench --bench micro -- --quick      # fast, noisier
//! cargo bench --bench micro -- floor        # the signature floor load.sh prints
//! ```
//!
//! The fixture is a temp directory with `keys generate` output, four dev providers (one
//! per token shape: entra, okta, auth0, cognito) and a route table; tokens come from
//! `cli::mint_tokens`, keys are installed with `Provider::install_dev_keys` (no HTTP).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use idfabric::config::{self, Config};
use idfabric::providers::now_secs;
use idfabric::runtime::Runtime;
use idfabric::{cli, credential, pipeline, policy, propagate};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// Dev providers of the fixture: (id, population, shape, extra YAML).
const PROVIDERS: &[(&str, &str, &str, &str)] = &[
    ("bench-entra", "workforce", "entra", "mfa_acr: [c1]\n"),
    ("bench-okta", "workforce", "okta", ""),
    (
        "bench-auth0",
        "customer",
        "auth0",
        "claims:\n  groups: https://idfabric.dev/groups\n  roles: https://idfabric.dev/roles\n  email: https://idfabric.dev/email\n  email_verified: https://idfabric.dev/email_verified\n",
    ),
    ("bench-cognito", "customer", "cognito", ""),
];

const USERS: &str = "users:\n  - { name: alice, display_name: Alice Admin, email: alice@contoso.example, email_verified: true, groups: [hr, employees], roles: [Reports.Read], scopes: [orders:read], mfa: true, connection: auth0 }\n";

/// A route with a 20-rule policy (4 deny, 16 allow) whose last allow rule is the one
/// that admits the bench user, so a decision walks every rule: regexes, globs, a time
/// window, combinators.
const POLICY_ROUTE: &str = r#"  - name: policy20
    match: { host: policy.bench.example }
    auth: bearer
    upstream: [127.0.0.1:9]
    policy:
      deny:
        - user_type: guest
        - { path: ["/internal/**", "/debug/*"] }
        - and: [ { method: [DELETE] }, { not: { groups_any: [admins] } } ]
        - claim: { path: email, regex: "[a-z0-9.]+@blocked\\.example" }
      allow:
        - { groups_any: [hr-admins], mfa: true }
        - { roles_all: [Orders.Admin, Orders.Write] }
        - { scopes_all: [orders:admin] }
        - { permissions_any: [orders:delete] }
        - { population: customer, org: org_acme, email_verified: true }
        - { email_domain: [partner.example], method: [GET] }
        - { provider: [bench-okta], groups_any: [ops] }
        - { claim: { path: attributes.department, in: [finance, legal] } }
        - { claim: { path: email, regex: "(ops|sre)-[a-z]+@example\\.com" } }
        - or: [ { acr: [c3] }, { tenant: [other-tenant] } ]
        - { path: "/admin/**", mfa_max_age: 15m }
        - { time: { days: [sat, sun], from: "00:00", to: "06:00", tz: "+01:00" }, groups_any: [weekend] }
        - { principal_type: service, scopes_any: [batch] }
        - { claim: { path: idp, prefix: "saml-" } }
        - { not: { population: workforce } }
        - { population: workforce, method: [GET, HEAD], path: "/**" }
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    rt: Arc<Runtime>,
}

/// Writes keys, provider files and a `routes.yaml` with `extra_routes` decoy routes
/// ahead of the measured one, then loads and builds the runtime.
fn fixture(extra_routes: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    idfabric::keys::generate_dev_set(&base.join("certs"), false, false).expect("keys generate");
    std::fs::create_dir_all(base.join("providers")).expect("providers dir");
    for (i, (id, pop, shape, extra)) in PROVIDERS.iter().enumerate() {
        let key = if i % 2 == 0 { "dev-idp-workforce.pem" } else { "dev-idp-customer.pem" };
        let text = format!(
            "id: {id}\nkind: dev\npopulation: {pop}\nshape: {shape}\nissuer: http://127.0.0.1:1/.idfabric/dev/{id}\nsigning_key: certs/{key}\n{extra}{USERS}"
        );
        std::fs::write(base.join(format!("providers/{id}.yaml")), text).expect("write provider");
    }
    let mut routes = String::new();
    // Decoys: a third exact hosts, a third wildcards, a third path prefixes on any host,
    // so a lookup for the measured route walks the wildcard and prefix lists.
    for i in 0..extra_routes {
        let m = match i % 3 {
            0 => format!("{{ host: r{i}.bench.example }}"),
            1 => format!("{{ host: \"*.w{i}.bench.example\" }}"),
            _ => format!("{{ path_prefix: /p{i}/ }}"),
        };
        routes.push_str(&format!("  - {{ name: decoy{i}, match: {m}, auth: bearer, upstream: [127.0.0.1:9] }}\n"));
    }
    routes.push_str(POLICY_ROUTE);
    routes.push_str(
        "  - name: main\n    match: { path_prefix: / }\n    auth: bearer\n    upstream: [127.0.0.1:9]\n    require: { groups_any: [employees, hr] }\n",
    );
    let providers: Vec<&str> = PROVIDERS.iter().map(|p| p.0).collect();
    let text = format!(
        "listen: {{ http: 127.0.0.1:1 }}\nproviders: [{}]\nbroker:\n  issuer: http://127.0.0.1:1/broker\n  signing_key: certs/broker-signing.pem\nroutes:\n{routes}",
        providers.join(", ")
    );
    std::fs::write(base.join("routes.yaml"), text).expect("write routes");
    let config = load(&base.join("routes.yaml"));
    let rt = Runtime::build(config.clone()).expect("runtime");
    for p in &rt.registry.providers {
        p.install_dev_keys();
    }
    Fixture { _dir: dir, config, rt: Arc::new(rt) }
}

fn load(path: &Path) -> Config {
    match config::load(path, idfabric::providers::KINDS) {
        Ok(c) => c,
        Err(e) => panic!("bench config invalid:\n{e}"),
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio")
}

fn mint(f: &Fixture, provider: &str, n: u64) -> Vec<String> {
    cli::mint_tokens(&f.config, provider, "alice", false, None, n).expect("mint")
}

fn headers_with(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::HOST, http::HeaderValue::from_static("app.bench.example"));
    h.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    h.insert(http::header::USER_AGENT, http::HeaderValue::from_static("wrk"));
    h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    h
}

fn route_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    for n in [0usize, 999] {
        let f = fixture(n);
        let total = n + 1;
        g.bench_function(BenchmarkId::new("find", format!("{total}_routes")), |b| {
            b.iter(|| black_box(f.rt.routes.find(black_box("app.bench.example"), black_box("/orders/42"))))
        });
        g.bench_function(BenchmarkId::new("find_host_with_port", format!("{total}_routes")), |b| {
            b.iter(|| black_box(f.rt.routes.find(black_box("127.0.0.1:8080"), black_box("/"))))
        });
    }
    g.finish();
}

/// Path canonicalisation, run on every request before routing: the already-canonical
/// case must stay one byte scan without allocation.
fn canon_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("canon");
    for (name, path) in [
        ("canonical_short", "/orders/42"),
        ("canonical_long", "/api/v2/customers/1234567890/orders/2026-12-02/items/abcdef"),
        ("dot_segment_start", "/.well-known/openid-configuration"),
        ("non_canonical", "/%61pi//v2/./customers/../orders/%7e42"),
        ("refused", "/static/..;/admin/users"),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(idfabric::canon::canonicalize(black_box(path)).is_ok())));
    }
    g.finish();
}

fn credential_extract(c: &mut Criterion) {
    let f = fixture(0);
    let token = mint(&f, "bench-entra", 1).remove(0);
    let h = headers_with(&token);
    let cookie = f.rt.config.session.cookie_name(false);
    c.bench_function("credential/extract_bearer", |b| {
        b.iter(|| black_box(credential::extract(black_box(&h), &cookie).is_ok()))
    });
    let mut none = http::HeaderMap::new();
    none.insert(http::header::COOKIE, http::HeaderValue::from_static("a=1; theme=dark; idfabric_session=abc"));
    c.bench_function("credential/extract_cookie", |b| {
        b.iter(|| black_box(credential::extract(black_box(&none), &cookie).is_ok()))
    });
}

fn verify(c: &mut Criterion) {
    let f = fixture(0);
    let tokio = tokio_rt();
    let reg: &idfabric::providers::Registry = &f.rt.registry;
    let mut g = c.benchmark_group("verify");

    // Hot: the same token again (thread-local slot).
    let hot = mint(&f, "bench-entra", 1).remove(0);
    tokio.block_on(reg.verify(&hot, None)).expect("verify hot");
    g.bench_function("cached_hot_slot", |b| {
        b.to_async(&tokio).iter(|| async { black_box(reg.verify(black_box(&hot), None).await.is_ok()) })
    });

    // Warm: tokens in the shared cache whose thread-local slots keep being evicted
    // (many distinct tokens cycled): SHA-256 + moka lookup.
    let warm = mint(&f, "bench-entra", 4096);
    for t in &warm {
        tokio.block_on(reg.verify(t, None)).expect("verify warm");
    }
    let mut i = 0usize;
    g.bench_function("cached_shared_cache", |b| {
        b.to_async(&tokio).iter(|| {
            i = (i + 1) % warm.len();
            let t = &warm[i];
            async move { black_box(reg.verify(black_box(t), None).await.is_ok()) }
        })
    });

    // Uncached: full parse + RSA-2048 verify + time checks + normalisation, per shape.
    for (id, _, shape, _) in PROVIDERS {
        let t = mint(&f, id, 1).remove(0);
        tokio.block_on(reg.inspect(&t)).unwrap_or_else(|e| panic!("{id}: {:?}", e.refusal));
        g.bench_function(BenchmarkId::new("uncached", shape), |b| {
            b.to_async(&tokio).iter(|| async { black_box(reg.inspect(black_box(&t)).await.is_ok()) })
        });
    }

    // Invalid signature (what a flood of forged tokens costs each).
    let mut bad = hot.clone();
    let sig_at = bad.rfind('.').expect("jws") + 10;
    let flip = if bad.as_bytes()[sig_at] == b'A' { "B" } else { "A" };
    bad.replace_range(sig_at..sig_at + 1, flip);
    // The same forged token again: answered by the negative cache.
    tokio.block_on(reg.verify(&bad, None)).expect_err("forged token refused");
    g.bench_function("invalid_signature_repeated", |b| {
        b.to_async(&tokio).iter(|| async { black_box(reg.verify(black_box(&bad), None).await.is_err()) })
    });
    // A new forged token every time (no cache can help): parse + RSA verify fails.
    g.bench_function("invalid_signature_uncached", |b| {
        b.to_async(&tokio).iter(|| async { black_box(reg.inspect(black_box(&bad)).await.is_err()) })
    });
    g.finish();
}

fn decide_and_propagate(c: &mut Criterion) {
    let f = fixture(0);
    let tokio = tokio_rt();
    let token = mint(&f, "bench-entra", 1).remove(0);
    let v = tokio.block_on(f.rt.registry.verify(&token, None)).expect("verify");
    let route = f.rt.routes.find("app.bench.example", "/").expect("route");
    let reqs = route.requirements(v.identity.population).expect("reqs");
    let mfa_acr = f.rt.registry.providers[v.provider].spec.mfa_acr.clone();
    c.bench_function("policy/decide", |b| {
        b.iter(|| black_box(policy::decide(black_box(&v.identity), black_box(&reqs), &mfa_acr).is_ok()))
    });
    c.bench_function("policy/route_requirements_and_decide", |b| {
        let req = policy::Request { method: "GET", path: "/", now: 0, signals: Default::default() };
        b.iter(|| black_box(pipeline::decide(&f.rt, route, v.clone(), &req).is_ok()))
    });
    c.bench_function("propagate/identity_headers", |b| {
        b.iter(|| black_box(propagate::identity_headers(black_box(&v.identity))))
    });
    c.bench_function("propagate/strip_and_insert_headers", |b| {
        let hdrs = propagate::identity_headers(&v.identity);
        b.iter_batched_ref(
            || {
                let mut req = pingora::http::RequestHeader::build("GET", b"/", Some(8)).expect("req");
                let _ = req.insert_header("host", "app.bench.example");
                let _ = req.insert_header("authorization", "Bearer x");
                let _ = req.insert_header("x-identity-sub", "forged");
                req
            },
            |req| {
                idfabric::gateway::strip_identity_headers(req);
                for (k, val) in &hdrs {
                    let _ = req.insert_header(*k, val.clone());
                }
            },
            BatchSize::SmallInput,
        )
    });
    let minter = f.rt.minter.as_ref().expect("broker configured");
    c.bench_function("mint/token_for_cached", |b| {
        let shared = minter.shared(&v);
        let _ = minter.token_for(&shared, &v, "main", route.index);
        b.iter(|| black_box(minter.token_for(black_box(&shared), &v, "main", route.index)))
    });
    let mut g = c.benchmark_group("mint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fresh_es256", |b| {
        let now = now_secs();
        b.iter(|| black_box(minter.mint(black_box(&v.identity), "main", now, now + 300)))
    });
    g.finish();
}

/// The signature floor a cache miss cannot go below: one RS256 and one ES256
/// verification of a realistic access token through the gateway's own signature check
/// (key parsed once, as the key set holds it), and one ES256 signature (the least a
/// newly minted `X-Identity-Token` costs). `benches/load.sh` runs this group in every
/// run and prints it above its table, with the targets computed from it.
fn floor(c: &mut Criterion) {
    use idfabric::keys::Signer;
    use idfabric::providers::{jwks, jwt};
    let f = fixture(0);
    let certs = f._dir.path().join("certs");
    let rs_signer = Signer::load(&certs.join("dev-idp-workforce.pem")).expect("RSA key");
    let es_signer = Signer::load(&certs.join("broker-signing.pem")).expect("P-256 key");
    assert_eq!((rs_signer.alg, es_signer.alg), ("RS256", "ES256"));
    // The same claims under both algorithms: an Entra-shaped access token of the fixture.
    let rs = mint(&f, "bench-entra", 1).remove(0);
    let payload = rs.split('.').nth(1).expect("payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).expect("base64"),
    )
    .expect("claims");
    let es = es_signer.sign_jwt("JWT", &claims);
    let mut g = c.benchmark_group("floor");
    for (name, token, signer) in [("rs256_verify", &rs, &rs_signer), ("es256_verify", &es, &es_signer)] {
        let set = jwks::parse_jwks(idfabric::providers::dev_op::jwks(signer).to_string().as_bytes(), "bench").expect("jwks");
        let parsed = jwt::parse(token).expect("parse");
        let key = set.find(parsed.header.kid.as_deref()).expect("kid");
        jwt::verify_signature(&parsed, key).expect("valid signature");
        g.bench_function(name, |b| b.iter(|| black_box(jwt::verify_signature(black_box(&parsed), key).is_ok())));
    }
    let input = es.rsplit_once('.').expect("jws").0.to_string();
    g.bench_function("es256_sign", |b| b.iter(|| black_box(es_signer.sign(black_box(input.as_bytes())))));
    g.finish();
}

fn admit(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_admit");
    for n in [0usize, 999] {
        let f = fixture(n);
        let tokio = tokio_rt();
        let token = mint(&f, "bench-entra", 1).remove(0);
        let h = headers_with(&token);
        let uri = http::Uri::from_static("/orders/42");
        let route = f.rt.routes.find("app.bench.example", "/").expect("route");
        tokio.block_on(pipeline::admit_from(&f.rt, route, &http::Method::GET, &h, &uri, false, None)).expect("admit");
        g.bench_function(BenchmarkId::new("hot_token_with_route_find", format!("{}_routes", n + 1)), |b| {
            b.to_async(&tokio).iter(|| async {
                let r = f.rt.routes.find("app.bench.example", "/").expect("route");
                black_box(pipeline::admit_from(&f.rt, r, &http::Method::GET, &h, &uri, false, None).await.is_ok())
            })
        });
    }
    g.finish();
}

/// The `policy` group: one decision of a 20-rule route policy (compiled once per load).
fn policy_rules(c: &mut Criterion) {
    let f = fixture(0);
    let tokio = tokio_rt();
    let token = mint(&f, "bench-entra", 1).remove(0);
    let v = tokio.block_on(f.rt.registry.verify(&token, None)).expect("verify");
    let route = f.rt.routes.find("policy.bench.example", "/").expect("route");
    let pol = route.spec.policy.clone().expect("policy");
    let reqs = route.requirements(v.identity.population).expect("reqs");
    let now = now_secs();
    let get = policy::Request { method: "GET", path: "/orders/42", now, signals: Default::default() };
    let denied = policy::Request { method: "GET", path: "/internal/x", now, signals: Default::default() };
    assert!(policy::decide_request(&v.identity, reqs, Some(&pol), &get, &[]).is_ok(), "last allow rule admits");
    assert!(policy::decide_request(&v.identity, reqs, Some(&pol), &denied, &[]).is_err(), "deny rule refuses");
    let mut g = c.benchmark_group("policy");
    g.bench_function("20_rules_allowed_by_last", |b| {
        b.iter(|| black_box(policy::decide_request(black_box(&v.identity), reqs, Some(&pol), black_box(&get), &[]).is_ok()))
    });
    g.bench_function("20_rules_denied_by_second", |b| {
        b.iter(|| black_box(policy::decide_request(black_box(&v.identity), reqs, Some(&pol), black_box(&denied), &[]).is_ok()))
    });
    g.finish();
}

/// The `miss` group: the parts of a cache miss that are not the signature. JWT parsing
/// (header rules + claims), building the `Verified` (which hashes the identity for the
/// minted-token cache), and a fresh `X-Identity-Token` for a new user.
fn miss(c: &mut Criterion) {
    use idfabric::providers::{jwt, Verified};
    let f = fixture(0);
    let tokio = tokio_rt();
    let mut g = c.benchmark_group("miss");
    for (id, _, shape, _) in PROVIDERS {
        let t = mint(&f, id, 1).remove(0);
        jwt::parse(&t).expect("parse");
        g.bench_function(BenchmarkId::new("jwt_parse", shape), |b| b.iter(|| black_box(jwt::parse(black_box(&t)).is_ok())));
    }
    let token = mint(&f, "bench-entra", 1).remove(0);
    let v = tokio.block_on(f.rt.registry.verify(&token, None)).expect("verify");
    g.bench_function("verified_new", |b| {
        b.iter_batched(
            || v.identity.clone(),
            |id| black_box(Verified::new(id, 0, String::new(), v.exp, [1; 32])),
            BatchSize::SmallInput,
        )
    });
    let minter = f.rt.minter.as_ref().expect("broker configured");
    let now = now_secs();
    g.bench_function("mint_fresh", |b| b.iter(|| black_box(minter.mint(black_box(&v.identity), "main", now, now + 300))));
    g.finish();
}

/// The `forwarded` group: deriving the client's origin and setting the three
/// `X-Forwarded-*` headers on an upstream request (what every proxied request pays).
fn forwarded_headers(c: &mut Criterion) {
    use idfabric::forwarded::{derive, TrustedProxies};
    let trusted = TrustedProxies::new(Vec::new());
    let h = headers_with("x");
    let peer: std::net::IpAddr = [192, 0, 2, 7].into();
    let mut g = c.benchmark_group("forwarded");
    g.bench_function("derive", |b| {
        b.iter(|| black_box(derive(Some(peer), false, black_box("app.bench.example"), &h, &trusted, None)))
    });
    let origin = derive(Some(peer), false, "app.bench.example", &h, &trusted, None);
    g.bench_function("upstream_headers_insert", |b| {
        b.iter_batched_ref(
            || pingora::http::RequestHeader::build("GET", b"/", Some(8)).expect("req"),
            |req| {
                for (name, value) in origin.upstream_headers() {
                    let _ = req.insert_header(name, value);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The `request` group: what every proxied request pays besides authentication: its
/// request id and W3C trace context (parsed, and the `traceparent` sent upstream), and
/// the access-review bump of an allowed workforce request.
fn per_request(c: &mut Criterion) {
    use idfabric::trace::{self, TraceContext};
    let f = fixture(0);
    let tokio = tokio_rt();
    let token = mint(&f, "bench-entra", 1).remove(0);
    let v = tokio.block_on(f.rt.registry.verify(&token, None)).expect("verify");
    let plain = headers_with("x");
    let mut traced = headers_with("x");
    traced.insert("traceparent", http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    traced.insert("x-request-id", http::HeaderValue::from_static("req-0123456789"));
    let mut g = c.benchmark_group("request");
    g.bench_function("request_id_new", |b| b.iter(|| black_box(trace::request_id(black_box(&plain)))));
    g.bench_function("request_id_inbound", |b| b.iter(|| black_box(trace::request_id(black_box(&traced)))));
    g.bench_function("trace_context_new_and_traceparent", |b| {
        b.iter(|| black_box(TraceContext::from_headers(black_box(&plain)).traceparent()))
    });
    g.bench_function("trace_context_inbound_and_traceparent", |b| {
        b.iter(|| black_box(TraceContext::from_headers(black_box(&traced)).traceparent()))
    });
    g.bench_function("access_observe_repeat", |b| b.iter(|| idfabric::access::observe(black_box("main"), &v)));
    g.finish();
}

criterion_group!(
    benches,
    policy_rules,
    route_match,
    canon_path,
    credential_extract,
    verify,
    decide_and_propagate,
    admit,
    floor,
    miss,
    forwarded_headers,
    per_request
);
criterion_main!(benches);
