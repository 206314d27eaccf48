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

/// Makes `${VAR}` placeholders inside YAML flow collections parse, by double-quoting
/// the plain scalars that contain one: `tenants: [${TENANT}]` and
/// `{ client_secret: ${SECRET} }` (docs/configuration.md writes both) are otherwise YAML errors,
/// because `{` and `}` are flow indicators. Only the text's quoting changes (no line
/// moves, so error positions stay right); expansion still happens per value, later.
pub fn quote_flow_placeholders(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("${") {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(text.lines().map(quote_line).collect::<Vec<_>>().join("\n") + if text.ends_with('\n') { "\n" } else { "" })
}

/// One line: flow collections in this project's config files never span lines.
fn quote_line(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 8);
    let (mut i, mut depth, mut item_start) = (0usize, 0usize, false);
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '#' if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' => {
                out.push_str(&line[i..]);
                return out;
            }
            '\'' | '"' if depth == 0 || item_start => {
                let end = quoted_end(b, i);
                out.push_str(&line[i..end]);
                i = end;
                item_start = false;
                continue;
            }
            '[' | '{' if depth > 0 || at_value_start(b, i) => {
                depth += 1;
                item_start = true;
                out.push(c);
            }
            ']' | '}' if depth > 0 => {
                depth -= 1;
                item_start = false;
                out.push(c);
            }
            ',' if depth > 0 => {
                item_start = true;
                out.push(c);
            }
            ' ' | '\t' => out.push(c),
            _ if depth > 0 && item_start => {
                let end = plain_end(b, i);
                let item = line[i..end].trim_end();
                if item.contains("${") {
                    out.push('"');
                    out.push_str(&item.replace('\\', "\\\\").replace('"', "\\\""));
                    out.push('"');
                    out.push_str(&line[i + item.len()..end]);
                } else {
                    out.push_str(&line[i..end]);
                }
                i = end;
                // After a mapping key's `: ` comes a value: another item start.
                item_start = b.get(i) == Some(&b':');
                if item_start {
                    out.push(':');
                    i += 1;
                }
                continue;
            }
            _ => {
                item_start = false;
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// Whether a `[` / `{` at `i` opens a flow collection: it starts a value (after `: `,
/// `- ` or only indentation), not the middle of a plain scalar like a URL.
fn at_value_start(b: &[u8], i: usize) -> bool {
    let before = std::str::from_utf8(&b[..i]).unwrap_or("").trim_end();
    before.is_empty() || before.ends_with(':') || before.ends_with('-')
}

/// End (exclusive) of a quoted scalar starting at `i`.
fn quoted_end(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if q == b'"' && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if q == b'\'' && b.get(j + 1) == Some(&b'\'') {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// End (exclusive) of a plain scalar inside a flow collection: the next `,`, `]`, `}`
/// or `: ` outside `${...}`, or a comment.
fn plain_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'$' if b.get(j + 1) == Some(&b'{') => {
                j = b[j..].iter().position(|&c| c == b'}').map(|p| j + p + 1).unwrap_or(b.len());
                continue;
            }
            b',' | b']' | b'}' => return j,
            b':' if matches!(b.get(j + 1), Some(b' ') | Some(b'\t') | None) => return j,
            b'#' if j > i && (b[j - 1] == b' ' || b[j - 1] == b'\t') => return j,
            _ => {}
        }
        j += 1;
    }
    j
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

    #[test]
    fn flow_placeholders_are_quoted() {
        let cases = [
            ("tenants: [${ENTRA_TENANT_ID}]", r#"tenants: ["${ENTRA_TENANT_ID}"]"#),
            ("audiences: [api://x, ${A:-b}]  # c ${X}", r#"audiences: [api://x, "${A:-b}"]  # c ${X}"#),
            (
                "  - { client_id: portal, client_secret: ${PORTAL_SECRET}, redirect_uris: [http://127.0.0.1:3000/callback] }",
                r#"  - { client_id: portal, client_secret: "${PORTAL_SECRET}", redirect_uris: [http://127.0.0.1:3000/callback] }"#,
            ),
            ("issuer: https://login.microsoftonline.com/${T}/v2.0", "issuer: https://login.microsoftonline.com/${T}/v2.0"),
            (r#"x: ["${A}", '${B}']"#, r#"x: ["${A}", '${B}']"#),
            ("m: { a: x${B}y }", r#"m: { a: "x${B}y" }"#),
        ];
        for (input, want) in cases {
            assert_eq!(quote_flow_placeholders(input), want, "{input}");
        }
        let doc = "a: [${X}]\nb: 1\n";
        assert_eq!(quote_flow_placeholders(doc), "a: [\"${X}\"]\nb: 1\n");
    }
}
