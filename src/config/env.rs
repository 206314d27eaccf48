//! `${ENV_VAR}` expansion for config values.
//!
//! Expansion happens while a value is deserialised (not on the raw file text), so a
//! comment that mentions `${SOMETHING}` never fails and a missing variable is reported by
//! serde with the file position and, through `serde_path_to_error`, the key path.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::ops::Deref;

/// A config string with `${VAR}` references already replaced by the environment's values.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct EnvString(pub String);

impl Deref for EnvString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for EnvString {
    fn from(s: &str) -> Self {
        EnvString(s.to_string())
    }
}

/// Why a value could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub enum ExpandError {
    Missing(String),
    Unterminated,
    BadName(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Missing(v) => write!(f, "environment variable {v} is not set"),
            ExpandError::Unterminated => write!(f, "unterminated `${{` in value"),
            ExpandError::BadName(v) => write!(f, "`{v}` is not a valid environment variable name"),
        }
    }
}

/// Replaces every `${NAME}` in `input` with the value `lookup` gives; `${NAME:-default}`
/// uses `default` when the variable is unset or empty; `$$` is a literal `$`.
pub fn expand_with(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(ExpandError::Unterminated)?;
            let (name, default) = match body[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&body[..end], None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(ExpandError::BadName(name.to_string()));
            }
            let value = match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => return Err(ExpandError::Missing(name.to_string())),
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub fn expand(input: &str) -> Result<String, ExpandError> {
    expand_with(input, |n| std::env::var(n).ok())
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Scalars such as ports or booleans written unquoted still become strings.
        let raw = ScalarString::deserialize(d)?.0;
        expand(&raw).map(EnvString).map_err(serde::de::Error::custom)
    }
}

/// Accepts any YAML scalar as a string (`8080`, `true`, `text`).
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, Result<&str, ExpandError>)] = &[
            ("plain", Ok("plain")),
            ("${A}", Ok("alpha")),
            ("x-${A}-y", Ok("x-alpha-y")),
            ("${EMPTY}", Ok("")),
            ("$$A", Ok("$A")),
            ("cost $5", Ok("cost $5")),
            ("${MISSING}", Err(ExpandError::Missing("MISSING".into()))),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            ("${A:-fallback}", Ok("alpha")),
            ("${A", Err(ExpandError::Unterminated)),
            ("${a-b}", Err(ExpandError::BadName("a-b".into()))),
            ("${}", Err(ExpandError::BadName(String::new()))),
        ];
        for (input, want) in cases {
            let got = expand_with(input, lookup);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                Err(e) => assert_eq!(got.as_ref().unwrap_err(), e, "{input}"),
            }
        }
    }
}
