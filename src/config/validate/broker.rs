//! `broker:` in routes.yaml: the issuer, token lifetimes and the relying parties.

use super::super::error::Problems;
use super::super::raw;
use super::super::{BrokerClientSpec, BrokerSpec, EnvString, ProviderSpec};
use super::{check_scheme, duration, strings, valid_id};
use crate::identity::Population;
use argon2::password_hash::PasswordHash;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn broker(b: &raw::Broker, base_dir: &Path, providers: &[Arc<ProviderSpec>], p: &mut Problems) -> Option<BrokerSpec> {
    let url = match url::Url::parse(&b.issuer) {
        Ok(u) => u,
        Err(e) => {
            p.at(None, "broker.issuer", format!("not a URL: {e}"));
            return None;
        }
    };
    check_scheme(p, None, "broker.issuer", &url);
    if url.path().trim_end_matches('/').is_empty() {
        p.at(None, "broker.issuer", "needs a path (e.g. https://id.example.com/broker): the broker's endpoints are served under it");
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.at(None, "broker.issuer", "must not have a query or fragment (OpenID Connect Discovery §3)");
    }
    let ttl = duration(p, None, "broker.identity_token_ttl", b.identity_token_ttl.as_ref(), Duration::from_secs(300));
    if ttl > Duration::from_secs(300) {
        p.at(None, "broker.identity_token_ttl", "must be at most 5m");
    }
    let day = Duration::from_secs(24 * 3600);
    let mut token_ttl = |key: &str, v: Option<&EnvString>, default: Duration, max: Duration| {
        let d = duration(p, None, key, v, default);
        if d > max {
            p.at(None, key, format!("must be at most {}", humantime::format_duration(max)));
        }
        d.min(max)
    };
    let access_token_ttl = token_ttl("broker.access_token_ttl", b.access_token_ttl.as_ref(), Duration::from_secs(600), day);
    let id_token_ttl = token_ttl("broker.id_token_ttl", b.id_token_ttl.as_ref(), Duration::from_secs(600), day);
    let refresh_token_ttl =
        token_ttl("broker.refresh_token_ttl", b.refresh_token_ttl.as_ref(), Duration::from_secs(30 * 24 * 3600), day * 365);
    let mut seen = HashSet::new();
    let clients = b.clients.iter().map(|c| broker_client(c, providers, &mut seen, p)).collect();
    Some(BrokerSpec {
        issuer: b.issuer.trim_end_matches('/').to_string(),
        path: url.path().trim_end_matches('/').to_string(),
        signing_key: base_dir.join(&*b.signing_key),
        identity_token_ttl: ttl.min(Duration::from_secs(300)),
        access_token_ttl,
        id_token_ttl,
        refresh_token_ttl,
        clients,
    })
}

/// Grant types the broker implements.
const BROKER_GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

fn broker_client(
    c: &raw::BrokerClient,
    providers: &[Arc<ProviderSpec>],
    seen: &mut HashSet<String>,
    p: &mut Problems,
) -> BrokerClientSpec {
    let id = c.client_id.to_string();
    let anchor = format!("client_id: {id}");
    let a = Some(anchor.as_str());
    if !valid_id(&id) {
        p.at(a, "broker.clients.client_id", format!("`{id}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"));
    }
    if !seen.insert(id.clone()) {
        p.at(a, "broker.clients.client_id", format!("duplicate client_id `{id}`"));
    }
    let public = c.public.unwrap_or(false);
    let secret = c.client_secret.as_ref().map(|s| s.to_string());
    match (&secret, public) {
        (None, false) => p.at(a, "broker.clients", format!("confidential client `{id}` needs a client_secret (or `public: true`)")),
        (Some(_), true) => p.at(a, "broker.clients.client_secret", format!("public client `{id}` must not have a client_secret")),
        (Some(s), false) if s.starts_with("$argon2") && !valid_phc(s) => {
            p.at(a, "broker.clients.client_secret", "looks like an argon2 hash but is not a valid PHC string (make one with `idfabric keys hash-secret`)")
        }
        (Some(s), false) if s.len() < 8 => p.at(a, "broker.clients.client_secret", "must be at least 8 characters"),
        _ => {}
    }
    let mut uris = |key: &str, list: &[EnvString]| -> Vec<String> {
        let out = strings(list);
        for u in &out {
            match url::Url::parse(u) {
                Err(e) => p.at(a, key, format!("`{u}` is not an absolute URL: {e}")),
                Ok(parsed) if parsed.fragment().is_some() || u.contains('#') => p.at(a, key, format!("`{u}` must not have a fragment")),
                Ok(parsed) if !parsed.has_host() => p.at(a, key, format!("`{u}` has no host")),
                Ok(_) => {}
            }
        }
        out
    };
    let redirect_uris = uris("broker.clients.redirect_uris", &c.redirect_uris);
    let post_logout_redirect_uris = uris("broker.clients.post_logout_redirect_uris", &c.post_logout_redirect_uris);
    let scopes = c.scopes.as_deref().map(strings).unwrap_or_else(|| ["openid", "profile", "email", "offline_access"].map(String::from).to_vec());
    let grant_types = c.grant_types.as_deref().map(strings).unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    for g in &grant_types {
        if !BROKER_GRANTS.contains(&g.as_str()) {
            p.at(a, "broker.clients.grant_types", format!("`{g}` is not one of authorization_code, refresh_token, client_credentials"));
        }
    }
    if public && grant_types.iter().any(|g| g == "client_credentials") {
        p.at(a, "broker.clients.grant_types", "a public client cannot use client_credentials");
    }
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        p.at(a, "broker.clients.redirect_uris", format!("client `{id}` uses authorization_code and needs at least one redirect URI"));
    }
    let mut populations = Vec::new();
    for v in c.populations.as_deref().unwrap_or_default() {
        match Population::parse(v) {
            Some(pop) => populations.push(pop),
            None => p.at(a, "broker.clients.populations", format!("`{}` is neither workforce nor customer", &**v)),
        }
    }
    let client_providers = c.providers.as_deref().map(strings);
    for pid in client_providers.iter().flatten() {
        if !providers.iter().any(|s| s.id == *pid) {
            p.at(a, "broker.clients.providers", format!("`{pid}` is not an enabled provider"));
        }
    }
    let introspect = introspect(c, &id, public, a, p);
    let backchannel_logout_uri = backchannel_logout_uri(c, a, p);
    BrokerClientSpec {
        client_id: id,
        client_secret: secret,
        public,
        redirect_uris,
        post_logout_redirect_uris,
        scopes,
        grant_types,
        populations,
        providers: client_providers,
        require_pkce: c.require_pkce.unwrap_or(true) || public,
        introspect,
        backchannel_logout_uri,
        backchannel_logout_session_required: c.backchannel_logout_session_required.unwrap_or(true),
    }
}

/// `backchannel_logout_uri`: an absolute https URL (plain http only on loopback), no
/// fragment (OpenID Connect Back-Channel Logout 1.0 §2.2).
fn backchannel_logout_uri(c: &raw::BrokerClient, a: Option<&str>, p: &mut Problems) -> Option<String> {
    let u = c.backchannel_logout_uri.as_ref()?.to_string();
    let key = "broker.clients.backchannel_logout_uri";
    match url::Url::parse(&u) {
        Err(e) => p.at(a, key, format!("`{u}` is not an absolute URL: {e}")),
        Ok(parsed) if parsed.fragment().is_some() || u.contains('#') => p.at(a, key, format!("`{u}` must not have a fragment")),
        Ok(parsed) if !parsed.has_host() => p.at(a, key, format!("`{u}` has no host")),
        Ok(parsed) => check_scheme(p, a, key, &parsed),
    }
    Some(u)
}

/// `introspect: true` lets a confidential client see other clients' access tokens at
/// `/introspect`; a public client cannot introspect at all, so asking for it is a mistake.
fn introspect(c: &raw::BrokerClient, id: &str, public: bool, a: Option<&str>, p: &mut Problems) -> bool {
    let on = c.introspect.unwrap_or(false);
    if on && public {
        p.at(a, "broker.clients.introspect", format!("public client `{id}` cannot introspect (it has no secret)"));
    }
    on
}

/// Whether `s` parses as an argon2 PHC string the broker can afford to check.
pub fn valid_phc(s: &str) -> bool {
    PasswordHash::new(s).is_ok_and(|h| {
        h.algorithm.as_str().starts_with("argon2") && h.salt.is_some() && h.hash.is_some() && affordable(&h)
    })
}

/// A hash whose cost a token request can afford: at most 64 MiB, 10 passes, 4 lanes
/// (the defaults are 19 MiB, 2, 1). A configured hash beyond that would let every
/// wrong-secret attempt cost the gateway seconds.
fn affordable(h: &PasswordHash<'_>) -> bool {
    let p = |name: &str, max: u64| h.params.get_decimal(name).is_none_or(|v| u64::from(v) <= max);
    p("m", 64 * 1024) && p("t", 10) && p("p", 4)
}
