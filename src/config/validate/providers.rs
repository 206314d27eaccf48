//! Provider files: find the enabled ones, check the keys every kind shares, and hand
//! each to its kind (the registry the caller of `load` passes) for its own keys.

use super::super::error::{ConfigError, Problems};
use super::super::kind::{Common, KindSection, Kinds, ProviderSource};
use super::super::raw::ProviderHead;
use super::super::{EnvString, ProviderSpec};
use super::{check_scheme, duration, opt_strings, parse, strings, valid_id};
use crate::identity::{Population, ProviderKind};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct ProviderFile {
    path: PathBuf,
    text: String,
    head: ProviderHead,
    /// The file is not YAML at all: reported instead of "no such id" / "unknown kind".
    syntax: Option<ConfigError>,
}

pub(super) fn load_providers(
    kinds: &Kinds,
    base_dir: &Path,
    routes_path: &Path,
    routes_text: &str,
    enabled: &[EnvString],
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<ProviderSpec>> {
    let dir = base_dir.join("providers");
    let mut files: Vec<ProviderFile> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(ConfigError { file: path, line: None, key: None, message: format!("cannot read: {e}") });
                    continue;
                }
            };
            let (head, syntax) = match parse::<ProviderHead>(&path, &text) {
                Ok(head) => (head, None),
                Err(e) => (ProviderHead { id: None, kind: None }, Some(e)),
            };
            files.push(ProviderFile { path, text, head, syntax });
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for id in enabled {
        if !seen.insert(id.to_string()) {
            let line = super::super::error::locate(routes_text, None, "providers");
            errors.push(ConfigError {
                file: routes_path.to_path_buf(),
                line,
                key: Some("providers".into()),
                message: format!("provider `{}` is listed twice", &**id),
            });
            continue;
        }
        let by_id: Vec<&ProviderFile> = files.iter().filter(|f| f.head.id.as_deref() == Some(&**id)).collect();
        let found = match by_id.len() {
            1 => Some(by_id[0]),
            0 => files.iter().find(|f| f.path.file_stem().and_then(|s| s.to_str()) == Some(&**id)),
            _ => {
                for f in &by_id[1..] {
                    errors.push(ConfigError {
                        file: f.path.clone(),
                        line: super::super::error::locate(&f.text, None, "id"),
                        key: Some("id".into()),
                        message: format!("provider id `{}` is also used by {}", &**id, by_id[0].path.display()),
                    });
                }
                None
            }
        };
        match found {
            Some(f) => {
                if let Some(spec) = provider(kinds, f, base_dir, errors) {
                    if spec.id != **id {
                        errors.push(ConfigError {
                            file: f.path.clone(),
                            line: super::super::error::locate(&f.text, None, "id"),
                            key: Some("id".into()),
                            message: format!("file is enabled as `{}` but its id is `{}`", &**id, spec.id),
                        });
                    }
                    out.push(Arc::new(spec));
                }
            }
            None if by_id.len() > 1 => {}
            // A file that is not valid YAML may well be the one meant: say what is wrong with it.
            None if files.iter().any(|f| f.syntax.is_some()) => {
                errors.extend(files.iter().filter_map(|f| f.syntax.clone()));
                errors.push(ConfigError {
                    file: routes_path.to_path_buf(),
                    line: super::super::error::locate(routes_text, None, "providers"),
                    key: Some("providers".into()),
                    message: format!("no readable file in {} has id `{}` (see the syntax errors above)", dir.display(), &**id),
                });
            }
            None => errors.push(ConfigError {
                file: routes_path.to_path_buf(),
                line: super::super::error::locate(routes_text, None, "providers"),
                key: Some("providers".into()),
                message: format!("no file in {} has id `{}`", dir.display(), &**id),
            }),
        }
    }
    out
}

fn provider(kinds: &Kinds, f: &ProviderFile, base_dir: &Path, errors: &mut Vec<ConfigError>) -> Option<ProviderSpec> {
    if let Some(e) = &f.syntax {
        errors.push(e.clone());
        return None;
    }
    let kind = f.head.kind.clone().unwrap_or_default();
    let Some(loader) = kinds.iter().find(|k| k.kind().as_str() == kind) else {
        let names: Vec<&str> = kinds.iter().map(|k| k.kind().as_str()).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => last.to_string(),
            None => "none".into(),
        };
        errors.push(ConfigError {
            file: f.path.clone(),
            line: super::super::error::locate(&f.text, None, "kind"),
            key: Some("kind".into()),
            message: format!("unknown kind `{kind}` (expected {expected})"),
        });
        return None;
    };
    let mut source = ProviderSource { path: &f.path, text: &f.text, base_dir, errors };
    loader.load(&mut source)
}

const KNOWN_CLAIM_FIELDS: &[&str] = &[
    "subject", "email", "email_verified", "name", "username", "groups", "roles", "permissions", "scopes", "org",
    "tenant", "idp",
];

/// Checks the keys every kind shares and builds the spec from them (its `kind` section
/// still empty); also returns the issuer's host.
pub(in super::super) fn common(
    c: &Common<'_>,
    path: &Path,
    kind: ProviderKind,
    default_population: Option<Population>,
    default_issuer: Option<String>,
    p: &mut Problems,
) -> (ProviderSpec, String) {
    let id = c.id.to_string();
    if !valid_id(&id) {
        p.at(None, "id", format!("`{id}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"));
    }
    let population = match c.population.as_deref() {
        Some(v) => Population::parse(v).or_else(|| {
            p.at(None, "population", format!("`{v}` is not workforce or customer"));
            None
        }),
        None => default_population.or_else(|| {
            p.at(None, "population", "is required for this kind (workforce or customer)");
            None
        }),
    }
    .unwrap_or(Population::Customer);
    let issuer = match c.issuer.as_deref() {
        Some(i) => i.to_string(),
        None if default_issuer.is_some() => default_issuer.unwrap_or_default(),
        None => {
            p.at(None, "issuer", "is required");
            String::new()
        }
    };
    let issuer_url = url::Url::parse(&issuer.replace("{tenantid}", "tenantid"));
    match &issuer_url {
        Ok(u) => check_scheme(p, None, "issuer", u),
        Err(e) if !issuer.is_empty() => p.at(None, "issuer", format!("not a URL: {e}")),
        Err(_) => {}
    }
    for (key, v) in [("discovery_url", c.discovery_url), ("jwks_url", c.jwks_url)] {
        if let Some(v) = v {
            match url::Url::parse(&v.replace("{policy}", "policy")) {
                Ok(u) => check_scheme(p, None, key, &u),
                Err(e) => p.at(None, key, format!("not a URL: {e}")),
            }
        }
    }
    let mut claims = BTreeMap::new();
    for (field, source) in c.claims.iter().flatten() {
        if source.is_empty() {
            p.at(None, &format!("claims.{field}"), "source claim name is empty");
        }
        let field_name = field.strip_prefix("attributes.").unwrap_or(field);
        if !KNOWN_CLAIM_FIELDS.contains(&field.as_str()) && !field.starts_with("attributes.") {
            p.at(
                None,
                &format!("claims.{field}"),
                format!(
                    "unknown field `{field}` (known: {}; or attributes.NAME)",
                    KNOWN_CLAIM_FIELDS.join(", ")
                ),
            );
        }
        let _ = field_name;
        claims.insert(field.clone(), source.to_string());
    }
    let ssf = c.ssf.as_ref().map(|f| ssf(f, p));
    let jwks_refresh = duration(p, None, "jwks_refresh", c.jwks_refresh.as_ref(), Duration::from_secs(600));
    let spec = ProviderSpec {
        id: id.clone(),
        file: path.to_path_buf(),
        population,
        issuer: issuer.clone(),
        discovery_url: c.discovery_url.as_ref().map(|s| s.to_string()),
        jwks_url: c.jwks_url.as_ref().map(|s| s.to_string()),
        client_id: c.client_id.as_ref().map(|s| s.to_string()),
        client_secret: c.client_secret.as_ref().map(|s| s.to_string()),
        audiences: opt_strings(c.audiences),
        domains: opt_strings(c.domains).into_iter().map(|d| d.to_ascii_lowercase()).collect(),
        scopes: c
            .scopes
            .as_deref()
            .map(strings)
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]),
        claims,
        display_name: c.display_name.as_ref().map(|s| s.to_string()).unwrap_or_else(|| id.clone()),
        jwks_refresh,
        mfa_acr: opt_strings(c.mfa_acr),
        route_policies: Vec::new(),
        authorize_params: c
            .authorize_params
            .iter()
            .flatten()
            .filter(|(k, _)| {
                let reserved = ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "code_challenge_method"];
                if reserved.contains(&k.as_str()) {
                    p.at(None, &format!("authorize_params.{k}"), "is set by idfabric itself");
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        ssf,
        kind: KindSection::new(kind, ()),
        scim: None,
    };
    let host = issuer_url.as_ref().ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    (spec, host)
}

/// The `ssf:` section: `issuer` and `audience` required, `issuer` and `jwks_url` URLs.
fn ssf(f: &super::super::kind::SsfFile, p: &mut Problems) -> super::super::SsfSpec {
    let anchor = Some("ssf:");
    let required = |key: &str, v: &Option<EnvString>, p: &mut Problems| match v.as_deref() {
        Some(v) if !v.trim().is_empty() => v.to_string(),
        _ => {
            // Reported at the `ssf:` line: the key itself is not in the file.
            p.at(None, "ssf", format!("`ssf.{key}` is required"));
            String::new()
        }
    };
    let issuer = required("issuer", &f.issuer, p);
    let audience = required("audience", &f.audience, p);
    if !issuer.is_empty() {
        if let Err(e) = url::Url::parse(&issuer) {
            p.at(anchor, "ssf.issuer", format!("not a URL: {e}"));
        }
    }
    if let Some(u) = f.jwks_url.as_deref() {
        match url::Url::parse(u) {
            Ok(url) => check_scheme(p, anchor, "ssf.jwks_url", &url),
            Err(e) => p.at(anchor, "ssf.jwks_url", format!("not a URL: {e}")),
        }
    }
    super::super::SsfSpec { issuer, jwks_url: f.jwks_url.as_ref().map(|s| s.to_string()), audience, poll: None }
}
