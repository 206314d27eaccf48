//! The command line against the real binary: `check` (offline, production, online
//! against a fake IdP), `token inspect`, `token mint` and `keys generate`.

use crate::common;

use common::fakeidp::{new_signer, sign_with_header, FakeIdp};
use common::*;
use idfabric::keys::KeyKind;
use serde_json::Value;

const ROUTES: &str = r#"  - name: hr
    match: { host: hr.localhost }
    upstream: [127.0.0.1:3001]
    require: { population: workforce, mfa: true, groups_any: [hr] }
  - name: shop-api
    match: { host: api.shop.localhost }
    auth: bearer
    upstream: [127.0.0.1:3002]
    require: { population: customer, scopes_all: [orders:read] }
  - name: staff
    match: { host: staff.localhost }
    upstream: [127.0.0.1:3003]
    require: { groups_any: [staff] }
  - name: secure
    match: { host: secure.localhost }
    upstream: [127.0.0.1:3004]
    require: { mfa: true }
  - name: public
    match: { path_prefix: /public/ }
    auth: none
    upstream: [127.0.0.1:3005]
"#;

/// An env with a workforce (Entra-shaped) and a customer (Auth0-shaped) dev provider.
fn dev_env() -> TestEnv {
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_dev_provider(
        "dev-cu",
        "customer",
        "auth0",
        "dev-idp-customer.pem",
        "users:\n- { name: carol, email: carol@gmail.example, email_verified: true, connection: google-oauth2, scopes: [orders:read] }\n",
    );
    env.write_routes(&["dev-wf", "dev-cu"], ROUTES);
    env
}

/// An env whose only provider is a generic OIDC provider served by `idp`.
fn oidc_env(idp: &FakeIdp) -> TestEnv {
    let env = TestEnv::new();
    env.write(
        "providers/corp.yaml",
        &format!("id: corp\nkind: oidc\npopulation: workforce\nissuer: {}\naudiences: [api://idfabric]\n", idp.issuer),
    );
    env.write_routes(&["corp"], "  - name: app\n    upstream: [127.0.0.1:3001]\n");
    env
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
}

// --- check --------------------------------------------------------------------------------

#[test]
fn check_offline_accepts_a_good_config() {
    let env = dev_env();
    let (code, out, err) = env.run(&["check", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration valid (2 provider(s), 5 route(s))"), "{out}");
}

#[test]
fn check_offline_names_file_line_and_key_of_a_typo() {
    // (case, file, good text, typo text)
    let cases = [
        ("routes.yaml: route key", "routes.yaml", "    upstream: [127.0.0.1:3002]", "    upstreams: [127.0.0.1:3002]"),
        ("routes.yaml: require key", "routes.yaml", "scopes_all: [orders:read]", "scope_all: [orders:read]"),
        ("provider file key", "providers/dev-wf.yaml", "signing_key:", "signing_keys:"),
    ];
    for (name, file, good, typo) in cases {
        let env = dev_env();
        let path = env.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(good), "{name}: fixture text changed");
        let bad = text.replacen(good, typo, 1);
        std::fs::write(&path, &bad).unwrap();
        let line = line_of(&bad, typo.trim());
        let (code, out, err) = env.run(&["check", "--offline"]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        let bad_key = typo.trim().split(':').next().unwrap();
        let want = format!("{file}:{line}: key");
        let hit = err.lines().find(|l| l.contains(&want));
        assert!(hit.is_some_and(|l| l.contains(bad_key)), "{name}: want `{want}` naming `{bad_key}` in:\n{err}");
    }
}

#[test]
fn check_names_a_missing_environment_variable() {
    let env = dev_env();
    let path = env.path().join("providers/dev-wf.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}client_id: ${{IDFABRIC_TEST_SURELY_UNSET}}\n")).unwrap();
    let (code, out, err) = env.run(&["check", "--offline"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("dev-wf.yaml") && err.contains("client_id") && err.contains("IDFABRIC_TEST_SURELY_UNSET"), "{err}");
}

#[test]
fn check_production_refuses_dev_providers() {
    let env = dev_env();
    let (code, _, err) = env.run(&["check", "--offline", "--production"]);
    assert_eq!(code, 1, "{err}");
    for id in ["dev-wf", "dev-cu"] {
        assert!(err.lines().any(|l| l.contains(id) && l.contains("development provider")), "{id}: {err}");
    }
    // The same config without --production is fine.
    assert_eq!(env.run(&["check", "--offline"]).0, 0);
}

#[test]
fn check_production_accepts_a_real_provider_behind_https() {
    let idp = FakeIdp::start("");
    let env = oidc_env(&idp);
    let routes = std::fs::read_to_string(env.routes_path()).unwrap().replacen(
        "listen: { http: ",
        &format!(
            "listen: {{ https: {{ addr: 127.0.0.1:{}, cert: certs/dev-tls.crt, key: certs/dev-tls.key }}, http: ",
            free_port()
        ),
        1,
    );
    env.write("routes.yaml", &routes);
    let (code, out, err) = env.run(&["check", "--offline", "--production"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn check_online_reports_each_provider_and_fails_when_the_idp_is_down() {
    let idp = FakeIdp::start("/oauth2/default");
    let signer = new_signer(KeyKind::Rsa2048);
    idp.set_keys(&[&signer]);
    let env = oidc_env(&idp);
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.trim_start().starts_with("corp")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("ok") && line.contains("1 signing key"), "{line}");
    assert!(idp.jwks_hits() >= 1 && idp.hits("/oauth2/default/.well-known/openid-configuration") >= 1);

    idp.set_down(true);
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out.lines().find(|l| l.trim_start().starts_with("corp")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("FAILED"), "{line}");
    // --offline does not touch the network, so it still passes.
    assert_eq!(env.run(&["check", "--offline"]).0, 0);

    idp.set_down(false);
    idp.set_garbage(true);
    let (code, out, _) = env.run(&["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
fn check_online_with_dev_providers_needs_no_network() {
    let env = dev_env();
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    for id in ["dev-wf", "dev-cu"] {
        assert!(out.lines().any(|l| l.contains(id) && l.contains("ok")), "{id}: {out}");
    }
}

// --- token inspect ----------------------------------------------------------------------------

fn inspect(env: &TestEnv, token: &str) -> (i32, Value, String) {
    let (code, out, err) = env.run(&["token", "inspect", token]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect printed no JSON ({e}):\n{out}\n{err}"));
    (code, v, err)
}

fn route_decision<'a>(v: &'a Value, route: &str) -> &'a Value {
    v["routes"].as_array().unwrap().iter().find(|r| r["route"] == route).unwrap_or_else(|| panic!("{route}: {v}"))
}

#[test]
fn token_inspect_prints_the_identity_and_each_routes_decision() {
    let env = dev_env();
    // (user, provider, expected per route: (route, decision, reason))
    type Want = [(&'static str, &'static str, &'static str); 5];
    let cases: [(&str, &str, Want); 3] = [
        (
            "alice",
            "dev-wf",
            [
                ("hr", "allow", "ok"),
                ("shop-api", "deny", "population_not_allowed"),
                ("staff", "allow", "ok"),
                ("secure", "allow", "ok"),
                ("public", "allow", ""),
            ],
        ),
        (
            "bob",
            "dev-wf",
            [
                ("hr", "deny", "group_required"),
                ("shop-api", "deny", "population_not_allowed"),
                ("staff", "allow", "ok"),
                ("secure", "step_up", "mfa_required"),
                ("public", "allow", ""),
            ],
        ),
        (
            "carol",
            "dev-cu",
            [
                ("hr", "deny", "population_not_allowed"),
                ("shop-api", "allow", "ok"),
                ("staff", "deny", "groups_incomplete"), // auth0 shape without a `claims: { groups }` mapping
                ("secure", "step_up", "mfa_required"),
                ("public", "allow", ""),
            ],
        ),
    ];
    for (user, provider, want) in cases {
        let token = env.mint(provider, user, &[]);
        let (code, v, err) = inspect(&env, &token);
        assert_eq!(code, 0, "{user}: {v}\n{err}");
        assert_eq!(v["valid"], true);
        assert_eq!(v["provider"], provider);
        assert!(v["expires_in"].as_i64().unwrap() > 0);
        let id = &v["identity"];
        for field in ["sub", "subject", "provider", "provider_kind", "population", "tenant", "idp", "groups", "roles", "scopes", "mfa", "amr", "token_use"] {
            assert!(id.get(field).is_some(), "{user}: identity lacks {field}: {id}");
        }
        assert!(id["sub"].as_str().unwrap().starts_with(&format!("{provider}:")));
        for (route, decision, reason) in want {
            let d = route_decision(&v, route);
            assert_eq!(d["decision"], decision, "{user} on {route}: {d}");
            if !reason.is_empty() {
                assert_eq!(d["reason"], reason, "{user} on {route}: {d}");
            }
            if decision != "allow" {
                assert!(d["status"].as_u64().is_some_and(|s| s == 401 || s == 403), "{user} on {route}: {d}");
            }
        }
    }
}

#[test]
fn token_inspect_reads_standard_input() {
    use std::io::Write;
    let env = dev_env();
    let token = env.mint("dev-wf", "alice", &[]);
    let mut child = std::process::Command::new(BIN)
        .args(["token", "inspect", "-"])
        .current_dir(env.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn token_inspect_refuses_expired_and_garbage_tokens_with_a_reason() {
    let env = dev_env();
    let good = env.mint("dev-wf", "alice", &[]);
    // The same claims, expired an hour ago, re-signed with the provider's real key.
    let header: Value = {
        use base64::Engine;
        let h = good.split('.').next().unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
    };
    let mut claims = jwt_claims(&good);
    let now = idfabric::providers::now_secs();
    claims["iat"] = (now - 7200).into();
    claims["nbf"] = (now - 7200).into();
    claims["exp"] = (now - 3600).into();
    let signer = idfabric::keys::Signer::load(&env.path().join("certs/dev-idp-workforce.pem")).unwrap();
    let expired = sign_with_header(&signer, &header, &claims);
    // A token with a forged signature: the claims of `good` signed by another key.
    let forged = sign_with_header(&new_signer(KeyKind::Rsa2048), &header, &jwt_claims(&good));
    let cases = [
        ("expired", expired.as_str(), "token_expired"),
        ("garbage", "garbage", "malformed_token"),
        ("three garbage segments", "abc.def.ghi", "malformed_token"),
        ("forged signature", forged.as_str(), "bad_signature"),
    ];
    for (name, token, reason) in cases {
        let (code, v, err) = inspect(&env, token);
        assert_eq!(code, 1, "{name}: {v}\n{err}");
        assert_eq!(v["valid"], false, "{name}");
        assert_eq!(v["reason"], reason, "{name}: {v}");
        assert!(v["detail"].is_string(), "{name}");
    }
}

// --- token mint -------------------------------------------------------------------------------

#[test]
fn token_mint_count_prints_distinct_valid_tokens() {
    let env = dev_env();
    let out = env.mint("dev-wf", "alice", &["--count", "3"]);
    let tokens: Vec<&str> = out.lines().collect();
    assert_eq!(tokens.len(), 3, "{out}");
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "tokens are not distinct");
    for t in tokens {
        assert_eq!(t.split('.').count(), 3);
        let (code, v, _) = inspect(&env, t);
        assert_eq!(code, 0, "{v}");
    }
    // --ttl and --id-token shape the token.
    let t = env.mint("dev-wf", "alice", &["--ttl", "5m"]);
    let c = jwt_claims(&t);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    let t = env.mint("dev-wf", "alice", &["--id-token"]);
    assert_eq!(jwt_claims(&t)["aud"], "dev-wf-app");
}

#[test]
fn token_mint_refuses_unknown_users_and_providers() {
    let env = dev_env();
    for (name, args, needle) in [
        ("unknown user", ["token", "mint", "--provider", "dev-wf", "--user", "mallory"], "mallory"),
        ("unknown provider", ["token", "mint", "--provider", "nope", "--user", "alice"], "nope"),
    ] {
        let (code, out, err) = env.run(&args);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: printed a token");
        assert!(err.contains(needle), "{name}: {err}");
    }
}

// --- keys generate ------------------------------------------------------------------------------

#[test]
fn keys_generate_writes_the_set_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).current_dir(dir.path()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, out, err) = run(&["keys", "generate", "--dir", "k"]);
    assert_eq!(code, 0, "{out}{err}");
    let k = dir.path().join("k");
    for f in ["dev-tls.crt", "dev-tls.key", "broker-signing.pem", "session.key"] {
        assert!(k.join(f).exists(), "{f} not written");
    }
    assert_eq!(std::fs::read(k.join("session.key")).unwrap().len(), 32);
    let pem = std::fs::read_to_string(k.join("broker-signing.pem")).unwrap();
    let signer = idfabric::keys::Signer::load(&k.join("broker-signing.pem")).unwrap();
    assert_eq!(signer.alg, "ES256", "the broker key is ES256 by default");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(k.join("session.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "session.key is readable by others: {mode:o}");
    }

    let (code, out, err) = run(&["keys", "generate", "--dir", "k"]);
    assert_eq!(code, 1, "overwrote without --force: {out}{err}");
    assert!(err.contains("broker-signing.pem") || err.contains("exist"), "{err}");
    assert_eq!(std::fs::read_to_string(k.join("broker-signing.pem")).unwrap(), pem, "a key changed without --force");

    let (code, out, err) = run(&["keys", "generate", "--dir", "k", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(std::fs::read_to_string(k.join("broker-signing.pem")).unwrap(), pem, "--force did not regenerate");
}

/// The documented configuration examples, written the way docs/configuration.md writes
/// them: `${VAR}` unquoted inside
/// flow collections (`tenants: [${ENTRA_TENANT_ID}]`, `{ client_secret: ${PORTAL_SECRET} }`).
#[test]
fn check_accepts_the_interface_examples_verbatim() {
    let env = TestEnv::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["dev-workforce.yaml", "dev-customer.yaml"] {
        std::fs::copy(repo.join("providers").join(f), env.path().join("providers").join(f)).unwrap();
    }
    env.write(
        "providers/corp-entra.yaml",
        "id: corp-entra            # unique, used in metrics, headers and logs\nkind: entra\npopulation: workforce\n\
         issuer: https://login.microsoftonline.com/${ENTRA_TENANT_ID}/v2.0\nclient_id: ${ENTRA_CLIENT_ID}\n\
         client_secret: ${ENTRA_CLIENT_SECRET}   # only for browser login\naudiences: [api://idfabric]\n\
         tenants: [${ENTRA_TENANT_ID}]           # multi-tenant allow-list (entra)\ndomains: [contoso.com]\n\
         scopes: [openid, profile, email]\nmfa_acr: [c1]\nclaims: { roles: \"https://shop.example/roles\" }\n",
    );
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [dev-workforce, dev-customer, corp-entra]\n\
             session: {{ store: memory, cookie: idfabric_session, ttl: 8h, key_file: certs/session.key }}\n\
             broker:\n  issuer: http://127.0.0.1:8080/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: portal, client_secret: ${{PORTAL_SECRET}}, redirect_uris: [http://127.0.0.1:3000/callback] }}\n\
             routes:\n{ROUTES}",
            http = env.http_port,
            admin = env.admin_port
        ),
    );
    let envs = [
        ("ENTRA_TENANT_ID", "3c1a9e47-5b2d-4f8e-9a61-0d7c2e4b8f15"),
        ("ENTRA_CLIENT_ID", "c4f3d2a1-9b8e-4c7d-a6f5-1e2d3c4b5a69"),
        ("ENTRA_CLIENT_SECRET", "s3cr3t-value"),
        ("PORTAL_SECRET", "portal-s3cr3t"),
    ];
    let out = std::process::Command::new(BIN)
        .args(["check", "--offline", "--config", "routes.yaml"])
        .current_dir(env.path())
        .envs(envs)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("s3cr3t"), "no secret in the output: {text}");
    // Without the variable, the error names the file, line, key and variable.
    let out = std::process::Command::new(BIN)
        .args(["check", "--offline", "--config", "routes.yaml"])
        .current_dir(env.path())
        .envs(envs.iter().filter(|(k, _)| *k != "ENTRA_TENANT_ID").copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("corp-entra.yaml") && err.contains("ENTRA_TENANT_ID"), "{err}");
}
