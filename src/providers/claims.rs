//! Reading claims without trusting their JSON types, and the provider-neutral parts of
//! normalisation: `amr` mapped to the RFC 8176 values
//! (<https://www.rfc-editor.org/rfc/rfc8176>), `mfa` only on positive evidence, and
//! the `claims:` overrides.

use crate::config::ProviderSpec;
use crate::identity::{Identity, MfaSource};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// A verified token's payload, indexed rather than built into a tree.
///
/// A token is parsed on every verification-cache miss, before its signature is
/// checked, and most of its claims are never read (or are read once, into the
/// identity). Building a `serde_json::Map` allocated every name and every value;
/// this keeps the decoded JSON text as it is and records, in one parsing pass, where
/// each top-level member's name and value lie in it. Strings are read in place; a
/// string with escapes is unescaped once, at parse time, into the same buffer; other
/// values stay JSON text and are read when asked for (numbers, lists) or turned into a
/// [`Value`] when a kind copies them into the identity's attributes.
///
/// Duplicate names: the last one wins, as when the payload was a map (RFC 7519 §4
/// allows either refusing duplicates or taking the last).
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// The payload JSON, then the unescaped text of names and strings that had escapes.
    text: String,
    /// Top-level members sorted by [`Key`], one per name.
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    /// The name's [`Key`], what members are sorted and looked up by.
    key: Key,
    name: (u32, u32),
    value: (u32, u32),
    /// `value` is a string's unescaped content; otherwise it is JSON text.
    string: bool,
}

/// A name's order key: its length, then its first eight bytes as a big-endian number,
/// then the rest of its bytes. Any total order serves a binary search; this one settles
/// most comparisons on two integers instead of a string comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    len: usize,
    head: u64,
}

impl Key {
    fn of(name: &[u8]) -> Key {
        let mut head = [0u8; 8];
        let n = name.len().min(8);
        head[..n].copy_from_slice(&name[..n]);
        Key { len: name.len(), head: u64::from_be_bytes(head) }
    }
}

/// Orders two names by [`Key`]; `a_key` is `a`'s key.
fn compare(a_key: Key, a: &[u8], b_key: Key, b: &[u8]) -> std::cmp::Ordering {
    a_key.cmp(&b_key).then_with(|| a.get(8..).cmp(&b.get(8..)))
}

/// One claim's value as it was sent: a string (unescaped) or other JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw<'a> {
    Str(&'a str),
    Json(&'a str),
}

impl Raw<'_> {
    /// The value as a JSON tree (for attributes and the few callers that need one).
    pub fn to_value(self) -> Value {
        match self {
            Raw::Str(s) => Value::String(s.to_string()),
            // The text was validated as JSON when the claims were parsed.
            Raw::Json(j) => serde_json::from_str(j).unwrap_or(Value::Null),
        }
    }
}

impl Claims {
    /// Parses a JSON object. Fails on anything else (and on invalid JSON).
    pub fn parse(text: String) -> Result<Claims, serde_json::Error> {
        let mut extra = String::new();
        let mut spans = Vec::with_capacity(24);
        {
            let base = text.as_str();
            let mut de = serde_json::Deserializer::from_str(base);
            de::Deserializer::deserialize_map(&mut de, Members { base, extra: &mut extra, out: &mut spans })?;
            de.end()?;
        }
        let mut text = text;
        let offset = text.len() as u32;
        text.push_str(&extra);
        let at = |(start, end, in_extra): (u32, u32, bool)| if in_extra { (start + offset, end + offset) } else { (start, end) };
        let bytes = text.as_bytes();
        let mut members: Vec<Member> = spans
            .into_iter()
            .map(|(name, value, string)| {
                let name = at(name);
                Member { key: Key::of(&bytes[span(name)]), name, value: at(value), string }
            })
            .collect();
        // Stable sort by name, then keep the last of each run of equal names: `dedup_by`
        // keeps the earlier of two equal members, so it takes the later one's value first.
        members.sort_by(|a, b| compare(a.key, &bytes[span(a.name)], b.key, &bytes[span(b.name)]));
        members.dedup_by(|later, kept| {
            let same = later.key == kept.key && bytes[span(later.name)] == bytes[span(kept.name)];
            if same {
                *kept = *later;
            }
            same
        });
        Ok(Claims { text, members })
    }

    /// Claims from a JSON object already in memory (userinfo, tests); an object the
    /// reader refuses (a value nested deeper than [`MAX_DEPTH`]) gives no claims.
    pub fn from_map(map: Map<String, Value>) -> Claims {
        let text = Value::Object(map).to_string();
        Claims::parse(text).unwrap_or_default()
    }

    /// Every claim as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()
    }

    /// A claim as it was sent.
    pub fn raw(&self, name: &str) -> Option<Raw<'_>> {
        let (bytes, name) = (self.text.as_bytes(), name.as_bytes());
        let key = Key::of(name);
        let i = self.members.binary_search_by(|m| compare(m.key, &bytes[span(m.name)], key, name)).ok()?;
        Some(self.value_of(&self.members[i]))
    }

    fn value_of(&self, m: &Member) -> Raw<'_> {
        let v = &self.text[span(m.value)];
        if m.string {
            Raw::Str(v)
        } else {
            Raw::Json(v)
        }
    }

    /// Every claim, in no particular order (shorter names first).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Raw<'_>)> {
        self.members.iter().map(|m| (&self.text[span(m.name)], self.value_of(m)))
    }

    /// A claim as a JSON tree.
    pub fn value(&self, name: &str) -> Option<Value> {
        self.raw(name).map(Raw::to_value)
    }

    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// A non-empty string claim.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.raw(name)? {
            Raw::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// A non-empty string claim; numbers are rendered (Okta `ver: 1`).
    pub fn string(&self, name: &str) -> Option<String> {
        match self.raw(name)? {
            Raw::Str(s) if !s.is_empty() => Some(s.to_string()),
            Raw::Json(j) => number(j).map(|n| n.to_string()),
            Raw::Str(_) => None,
        }
    }

    pub fn i64(&self, name: &str) -> Option<i64> {
        match self.raw(name)? {
            Raw::Json(j) => number(j).and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
            Raw::Str(_) => None,
        }
    }

    /// A boolean that some providers send as `"true"`/`"false"` strings (Cognito).
    pub fn bool_lenient(&self, name: &str) -> Option<bool> {
        match self.raw(name)? {
            Raw::Json("true") => Some(true),
            Raw::Json("false") => Some(false),
            Raw::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Raw::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// An array of strings, or one string as a one-element list.
    pub fn list(&self, name: &str) -> Vec<String> {
        raw_list(self.raw(name), false)
    }

    /// Scopes: a space-separated string or an array.
    pub fn scope_list(&self, name: &str) -> Vec<String> {
        raw_list(self.raw(name), true)
    }

    /// `aud` as a list (string or array): strings are borrowed unless they had escapes.
    pub fn audiences(&self) -> Vec<Cow<'_, str>> {
        match self.raw("aud") {
            Some(Raw::Str(s)) => vec![Cow::Borrowed(s)],
            Some(Raw::Json(j)) if j.starts_with('[') => {
                items(j).unwrap_or_default().into_iter().filter_map(|i| if let Item::Str(s) = i { Some(s) } else { None }).collect()
            }
            _ => Vec::new(),
        }
    }

    /// `aud` names `want` (string or array); a string `aud` is compared in place.
    pub fn has_audience(&self, want: &str) -> bool {
        match self.raw("aud") {
            Some(Raw::Str(s)) => s == want,
            _ => self.audiences().iter().any(|a| a == want),
        }
    }
}

fn span((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// JSON text that is a number.
fn number(j: &str) -> Option<serde_json::Number> {
    if j.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        serde_json::from_str(j).ok()
    } else {
        None
    }
}

/// The strings and numbers of a JSON array, in order; other items are skipped.
fn items(j: &str) -> Option<Vec<Item<'_>>> {
    struct Items;
    impl<'de> Visitor<'de> for Items {
        type Value = Vec<Item<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
            while let Some(item) = seq.next_element::<Item<'de>>()? {
                if !matches!(item, Item::Other) {
                    out.push(item);
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(j);
    de::Deserializer::deserialize_seq(&mut de, Items).ok()
}

/// One array item (or a member name): a string, a number rendered as JSON renders it,
/// or anything else.
enum Item<'de> {
    Str(Cow<'de, str>),
    Number(String),
    Other,
}

impl<'de> de::Deserialize<'de> for Item<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Item<'de>, E> {
                Ok(Item::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Item<'de>, E> {
                Ok(Item::Str(Cow::Owned(s.to_string())))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Item<'de>, E> {
                Ok(Item::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Item<'de>, E> {
                Ok(Item::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Item<'de>, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Item::Other, |n| Item::Number(n.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_unit<E>(self) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Item::Other)
            }
        }
        d.deserialize_any(V)
    }
}

fn raw_list(v: Option<Raw<'_>>, split_spaces: bool) -> Vec<String> {
    match v {
        Some(Raw::Str(s)) if split_spaces => s.split_whitespace().map(str::to_string).collect(),
        Some(Raw::Str(s)) if !s.is_empty() => vec![s.to_string()],
        Some(Raw::Json(j)) if j.starts_with('[') => {
            let items = items(j).unwrap_or_default().into_iter();
            items
                .filter_map(|i| match i {
                    Item::Str(s) => Some(s.into_owned()),
                    Item::Number(n) => Some(n),
                    Item::Other => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// How deep a claim's value may nest arrays and objects. Skipping a value does not limit
/// its depth, so it is checked here: within what a JSON tree parser accepts (128 levels
/// for the whole payload), so every accepted claim can be read as a [`Value`].
const MAX_DEPTH: usize = 100;

/// Whether JSON text `j` nests arrays and objects deeper than `limit` (brackets inside
/// strings do not count). One pass over the bytes; the text is valid JSON.
fn nested_deeper_than(j: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in j.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Records each top-level member of the payload object as spans of the text:
/// `(name, value, value is a string)`, each span `(start, end, in extra)` where
/// `extra` holds the unescaped text of names and strings that had escapes.
type Spans = Vec<((u32, u32, bool), (u32, u32, bool), bool)>;

struct Members<'a> {
    base: &'a str,
    extra: &'a mut String,
    out: &'a mut Spans,
}

impl Members<'_> {
    /// Where `s` (a slice of `base`) lies in it.
    fn within(&self, s: &str) -> (u32, u32, bool) {
        let start = s.as_ptr() as usize - self.base.as_ptr() as usize;
        (start as u32, (start + s.len()) as u32, false)
    }

    /// Appends unescaped text to `extra`.
    fn push_extra(&mut self, s: &str) -> (u32, u32, bool) {
        let start = self.extra.len();
        self.extra.push_str(s);
        (start as u32, self.extra.len() as u32, true)
    }
}

impl<'a, 'de: 'a> Visitor<'de> for Members<'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // A member name is a string (JSON object keys are): borrowed unless it had escapes.
        while let Some(key) = map.next_key::<Item<'de>>()? {
            let Item::Str(name) = key else { return Err(de::Error::custom("a claim name is not a string")) };
            let raw: &'de RawValue = map.next_value()?;
            let name = match name {
                Cow::Borrowed(n) => self.within(n),
                Cow::Owned(n) => self.push_extra(&n),
            };
            let text = raw.get();
            let (value, string) = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(inner) if !inner.contains('\\') => (self.within(inner), true),
                Some(_) => {
                    let unescaped: String = serde_json::from_str(text).map_err(de::Error::custom)?;
                    (self.push_extra(&unescaped), true)
                }
                None if nested_deeper_than(text, MAX_DEPTH) => {
                    return Err(de::Error::custom("a claim nests deeper than the limit"));
                }
                None => (self.within(text), false),
            };
            self.out.push((name, value, string));
        }
        Ok(())
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
        let v = c.raw(source);
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
                id.groups = raw_list(v, false);
                id.groups_complete = v.is_some();
            }
            "roles" => {
                if v.is_some() {
                    id.roles = raw_list(v, false)
                }
            }
            "permissions" => {
                if v.is_some() {
                    id.permissions = raw_list(v, false)
                }
            }
            "scopes" => {
                if v.is_some() {
                    id.scopes = raw_list(v, true)
                }
            }
            other => {
                if let (Some(name), Some(v)) = (other.strip_prefix("attributes."), v) {
                    id.attributes.insert(name.to_string(), v.to_value());
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
        let c = Claims::parse(r#"{"a":"true","b":false,"s":"x y","arr":["p","q"],"one":"g"}"#.into()).unwrap();
        assert_eq!(c.bool_lenient("a"), Some(true));
        assert_eq!(c.bool_lenient("b"), Some(false));
        assert_eq!(c.scope_list("s"), s(&["x", "y"]));
        assert_eq!(c.list("arr"), s(&["p", "q"]));
        assert_eq!(c.list("one"), s(&["g"]));
        assert!(c.list("missing").is_empty());
    }

    #[test]
    fn escapes_duplicates_and_numbers() {
        let text = r#"{"a\u0062":"x\"y","aud":["p\/q",7,"r",null,["n"]],"n":1.5e3,"big":18446744073709551615,
            "neg":-3,"dup":"first","dup":"last","empty":"","t":true,"obj":{"k":[1,2]}}"#;
        let c = Claims::parse(text.into()).unwrap();
        assert_eq!(c.str("ab"), Some("x\"y"));
        assert_eq!(c.audiences(), vec!["p/q", "r"]);
        assert_eq!(c.list("aud"), vec!["p/q", "7", "r"]);
        assert!(c.has_audience("p/q") && !c.has_audience("n"));
        assert_eq!(c.string("n"), Some("1500.0".into()));
        assert_eq!(c.i64("n"), Some(1500));
        assert_eq!(c.string("big"), Some("18446744073709551615".into()));
        assert_eq!(c.i64("neg"), Some(-3));
        assert_eq!(c.str("dup"), Some("last"));
        assert_eq!(c.iter().filter(|(k, _)| *k == "dup").count(), 1);
        assert_eq!((c.str("empty"), c.string("empty"), c.has("empty")), (None, None, true));
        assert_eq!(c.bool_lenient("t"), Some(true));
        assert_eq!(c.value("obj"), Some(serde_json::json!({"k": [1, 2]})));
        assert_eq!(c.str("obj"), None);
        // Deep nesting is refused, as a JSON tree parser refuses it (and no stack grows).
        let nest = |n: usize| format!("{{\"a\":{}1{}}}", "[{\"k\":\"]]\\\"[\",\"v\":".repeat(n), "}]".repeat(n));
        assert!(Claims::parse(nest(10_000)).is_err());
        assert!(Claims::parse(nest(51)).is_err());
        let c = Claims::parse(nest(50)).unwrap();
        assert!(c.value("a").is_some_and(|v| v.is_array()));
        for bad in ["[1]", "\"s\"", "{\"a\":1} x", "{\"a\":}", "{\"a\":\"\\ud800\"}", ""] {
            assert!(Claims::parse(bad.into()).is_err(), "{bad}");
        }
    }

    /// Every accessor answers what the same accessor over a `serde_json::Map` (the
    /// representation this replaced) answers, on random objects with duplicate names,
    /// escapes, numbers, nested values and non-ASCII text.
    #[test]
    fn indexed_claims_read_like_a_map() {
        use proptest::prelude::*;
        fn reference_list(v: Option<&Value>, split: bool) -> Vec<String> {
            match v {
                Some(Value::String(s)) if split => s.split_whitespace().map(str::to_string).collect(),
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
        let name = prop::sample::select(vec!["aud", "a", "b", "a\"b", "é", "exp", "amr", "scope", "", "extension_a", "extension_b", "email_verified", "emaiL_verified"]).prop_map(str::to_string);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z \"\\\\/é\u{1F600}\n]{0,8}".prop_map(Value::String),
            prop::sample::select(vec!["true", "FALSE", "", " x  y "]).prop_map(|s| Value::String(s.into())),
        ];
        let value = leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        });
        proptest!(ProptestConfig { cases: 2000, ..ProptestConfig::default() }, |(members in prop::collection::vec((name, value), 0..8))| {
            let body: Vec<String> = members.iter().map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v)).collect();
            let text = format!("{{{}}}", body.join(","));
            let map: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let c = Claims::parse(text.clone()).unwrap();
            for n in ["aud", "a", "b", "a\"b", "é", "exp", "amr", "scope", "", "extension_a", "extension_b", "email_verified", "emaiL_verified", "missing", "extension_c"] {
                let v = map.get(n);
                prop_assert_eq!(c.has(n), v.is_some());
                prop_assert_eq!(c.value(n), v.cloned());
                prop_assert_eq!(c.str(n), v.and_then(Value::as_str).filter(|s| !s.is_empty()));
                let string = match v {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                prop_assert_eq!(c.string(n), string);
                let i = match v {
                    Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                    _ => None,
                };
                prop_assert_eq!(c.i64(n), i);
                let b = match v {
                    Some(Value::Bool(b)) => Some(*b),
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                };
                prop_assert_eq!(c.bool_lenient(n), b);
                prop_assert_eq!(c.list(n), reference_list(v, false));
                prop_assert_eq!(c.scope_list(n), reference_list(v, true));
            }
            let auds: Vec<&str> = match map.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let got = c.audiences();
            prop_assert_eq!(got.iter().map(|a| a.as_ref()).collect::<Vec<&str>>(), auds);
            prop_assert_eq!(c.iter().count(), map.len());
            prop_assert_eq!(c.clone().into_map(), map);
        });
    }
}
