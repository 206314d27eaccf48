//! Reading claims without trusting their JSON types, and the provider-neutral parts of
//! normalisation: `amr` mapped to the RFC 8176 values
//! (<https://www.rfc-editor.org/rfc/rfc8176>), `mfa` only on positive evidence, and
//! the `claims:` overrides.

use crate::config::ProviderSpec;
use crate::identity::{Identity, MfaSource};
use serde_json::{Map, Value};

/// A verified token's payload.
#[derive(Debug, Clone, Default)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A string claim; numbers are rendered (Okta `ver: 1`).
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn i64(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            _ => None,
        }
    }

    /// A boolean that some providers send as `"true"`/`"false"` strings (Cognito).
    pub fn bool_lenient(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// An array of strings, or one string as a one-element list.
    pub fn list(&self, name: &str) -> Vec<String> {
        value_list(self.0.get(name), false)
    }

    /// Scopes: a space-separated string or an array.
    pub fn scope_list(&self, name: &str) -> Vec<String> {
        value_list(self.0.get(name), true)
    }

    /// `aud` as a list (string or array).
    pub fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

pub fn value_list(v: Option<&Value>, split_spaces: bool) -> Vec<String> {
    match v {
        Some(Value::String(s)) if split_spaces => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Maps one provider's `amr` values to RFC 8176 values (plus `fed`), dropping the
/// ambiguous ones. Unknown values are dropped from `amr` (they stay in `amr_raw`).
pub fn normalise_amr(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in raw {
        let n = match v.as_str() {
            "pwd" => "pwd",
            "otp" | "email" | "google_otp" | "symantec" | "oauth_otp" | "yubikey" | "duo" => "otp",
            "rsa" | "pop" | "phr" => "pop",
            "sms" => "sms",
            "tel" => "tel",
            "kba" => "kba",
            "swk" => "swk",
            "hwk" => "hwk",
            "sc" => "sc",
            "pin" => "pin",
            "wia" => "wia",
            "fed" => "fed",
            "mfa" | "ngcmfa" => "mfa",
            "face" | "fpt" | "iris" | "retina" | "vbm" | "user" | "geo" | "mca" => v.as_str(),
            _ => continue,
        };
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// `mfa` only on positive evidence: `amr` says `mfa`, or names factors of two classes,
/// or `acr` / Entra `acrs` is one of the provider's configured strong values.
pub fn derive_mfa(amr: &[String], acr: Option<&str>, auth_context: &[String], mfa_acr: &[String]) -> (bool, MfaSource) {
    if amr.iter().any(|a| a == "mfa") {
        return (true, MfaSource::Amr);
    }
    let knowledge = amr.iter().any(|a| matches!(a.as_str(), "pwd" | "kba" | "pin"));
    let possession = amr.iter().any(|a| matches!(a.as_str(), "otp" | "sms" | "tel" | "swk" | "hwk" | "pop" | "sc"));
    if knowledge && possession {
        return (true, MfaSource::Amr);
    }
    let strong = |v: &str| mfa_acr.iter().any(|m| m == v);
    if acr.is_some_and(strong) || auth_context.iter().any(|c| strong(c)) {
        return (true, MfaSource::Acr);
    }
    (false, MfaSource::None)
}

/// Fills `amr`, `amr_raw`, `acr`, `mfa`, `mfa_source` from the standard claims.
pub fn apply_amr_acr(id: &mut Identity, c: &Claims, mfa_acr: &[String]) {
    id.amr_raw = c.list("amr");
    id.amr = normalise_amr(&id.amr_raw);
    id.acr = c.string("acr");
    let (mfa, src) = derive_mfa(&id.amr, id.acr.as_deref(), &id.auth_context, mfa_acr);
    id.mfa = mfa;
    id.mfa_source = src;
}

/// Applies the provider's `claims:` map (normalised field → source claim) over what the
/// kind mapped. A configured source that is absent leaves the field as the kind set it,
/// except for `groups`, whose presence decides `groups_complete`.
pub fn apply_overrides(id: &mut Identity, c: &Claims, spec: &ProviderSpec) {
    for (field, source) in &spec.claims {
        let v = c.get(source);
        match field.as_str() {
            "email" => set_opt(&mut id.email, c.string(source)),
            "email_verified" => {
                if let Some(b) = c.bool_lenient(source) {
                    id.email_verified = Some(b)
                }
            }
            "name" => set_opt(&mut id.name, c.string(source)),
            "username" => set_opt(&mut id.username, c.string(source)),
            "org" => set_opt(&mut id.org, c.string(source)),
            "tenant" => {
                if let Some(t) = c.string(source) {
                    id.tenant = t
                }
            }
            "idp" => {
                if let Some(t) = c.string(source) {
                    id.idp = t
                }
            }
            "subject" => {
                if let Some(s) = c.string(source) {
                    id.sub = format!("{}:{s}", id.provider);
                    id.subject = s;
                }
            }
            "groups" => {
                id.groups = value_list(v, false);
                id.groups_complete = v.is_some();
            }
            "roles" => {
                if v.is_some() {
                    id.roles = value_list(v, false)
                }
            }
            "permissions" => {
                if v.is_some() {
                    id.permissions = value_list(v, false)
                }
            }
            "scopes" => {
                if v.is_some() {
                    id.scopes = value_list(v, true)
                }
            }
            other => {
                if let (Some(name), Some(v)) = (other.strip_prefix("attributes."), v) {
                    id.attributes.insert(name.to_string(), v.clone());
                }
            }
        }
    }
}

fn set_opt(slot: &mut Option<String>, v: Option<String>) {
    if v.is_some() {
        *slot = v;
    }
}

/// RFC 9068 access-token `typ`, in its short or media-type spelling.
pub fn is_at_jwt(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// The host of an issuer URL (Okta org host, Auth0 domain).
pub fn issuer_host(iss: &str) -> String {
    url::Url::parse(iss).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn amr_table() {
        assert_eq!(normalise_amr(&s(&["pwd", "okta_verify", "otp", "mfa"])), s(&["pwd", "otp", "mfa"]));
        assert_eq!(normalise_amr(&s(&["wiaormfa", "none"])), Vec::<String>::new());
        assert_eq!(normalise_amr(&s(&["rsa", "ngcmfa"])), s(&["pop", "mfa"]));
    }

    #[test]
    fn mfa_needs_evidence() {
        let none: Vec<String> = vec![];
        assert_eq!(derive_mfa(&s(&["mfa"]), None, &none, &none), (true, MfaSource::Amr));
        assert_eq!(derive_mfa(&s(&["pwd", "otp"]), None, &none, &none), (true, MfaSource::Amr));
        assert_eq!(derive_mfa(&s(&["pwd"]), None, &none, &none), (false, MfaSource::None));
        assert_eq!(derive_mfa(&none, Some("urn:okta:loa:2fa:any"), &none, &s(&["urn:okta:loa:2fa:any"])), (true, MfaSource::Acr));
        assert_eq!(derive_mfa(&none, Some("urn:okta:loa:2fa:any:ifpossible"), &none, &s(&["urn:okta:loa:2fa:any"])), (false, MfaSource::None));
        assert_eq!(derive_mfa(&none, None, &s(&["c1"]), &s(&["c1"])), (true, MfaSource::Acr));
    }

    #[test]
    fn lenient_types() {
        let c = Claims(serde_json::from_str(r#"{"a":"true","b":false,"s":"x y","arr":["p","q"],"one":"g"}"#).unwrap());
        assert_eq!(c.bool_lenient("a"), Some(true));
        assert_eq!(c.bool_lenient("b"), Some(false));
        assert_eq!(c.scope_list("s"), s(&["x", "y"]));
        assert_eq!(c.list("arr"), s(&["p", "q"]));
        assert_eq!(c.list("one"), s(&["g"]));
        assert!(c.list("missing").is_empty());
    }
}
