//! SCIM PATCH (RFC 7644 §3.5.2) for the shapes provisioning clients send:
//! `add` / `replace` / `remove` (any case: Entra writes `Replace`), with a path of
//! `attr`, `attr.sub`, `attr[sub eq "v"]`, `attr[sub eq "v"].sub`, or an extension
//! schema URN followed by `:attr`; or, for `add`/`replace`, no path and an object
//! value whose keys are such paths. Adding to a multi-valued attribute appends the
//! values not already there (members by `value`); removing with a value list drops
//! those. Booleans may arrive as the strings `"True"`/`"False"` (Entra).

use super::{ScimError, PATCH_SCHEMA};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub kind: Kind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

fn bad(scim_type: &'static str, reason: &'static str, detail: impl Into<String>) -> ScimError {
    ScimError::new(400, Some(scim_type), reason, detail)
}

/// `true`/`false`, or the strings `"true"`/`"false"` in any case (Entra sends
/// `"False"` for `active`).
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The operations of a PatchOp body.
pub fn ops(body: &Value) -> Result<Vec<Op>, ScimError> {
    let schemas = body.get("schemas").and_then(Value::as_array);
    if !schemas.is_some_and(|s| s.iter().any(|x| x.as_str() == Some(PATCH_SCHEMA))) {
        return Err(bad("invalidSyntax", "invalid_patch", format!("a PATCH body must list the schema `{PATCH_SCHEMA}`")));
    }
    let list = body
        .get("Operations")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("invalidSyntax", "invalid_patch", "`Operations` must be a non-empty list"))?;
    list.iter()
        .map(|o| {
            let kind = match o.get("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => Kind::Add,
                Some("replace") => Kind::Replace,
                Some("remove") => Kind::Remove,
                _ => return Err(bad("invalidSyntax", "invalid_patch", "each operation's `op` must be add, replace or remove")),
            };
            let path = match o.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if !p.trim().is_empty() => Some(p.trim().to_string()),
                Some(_) => return Err(bad("invalidPath", "invalid_path", "`path` must be a non-empty string")),
            };
            let value = o.get("value").cloned();
            if kind != Kind::Remove && value.is_none() {
                return Err(bad("invalidValue", "invalid_value", "add and replace need a `value`"));
            }
            if path.is_none() && (kind == Kind::Remove || !value.as_ref().is_some_and(Value::is_object)) {
                let t = if kind == Kind::Remove { "noTarget" } else { "invalidValue" };
                return Err(bad(t, "invalid_path", "without a `path` the operation must be add or replace with an object value"));
            }
            Ok(Op { kind, path, value })
        })
        .collect()
}

/// A parsed path: `attr`, then an optional `[key eq "v"]` filter and `.sub`.
#[derive(Debug, PartialEq)]
struct Path {
    /// An extension schema URN the attribute lives under.
    urn: Option<String>,
    attr: String,
    filter: Option<(String, String)>,
    sub: Option<String>,
}

fn parse_path(p: &str) -> Result<Path, ScimError> {
    let invalid = || bad("invalidPath", "invalid_path", format!("unsupported path `{p}`"));
    let (urn, rest) = if p.to_ascii_lowercase().starts_with("urn:") {
        let (u, a) = p.rsplit_once(':').ok_or_else(invalid)?;
        (Some(u.to_string()), a)
    } else {
        (None, p)
    };
    let (head, filter, tail) = match rest.split_once('[') {
        Some((h, r)) => {
            let (f, t) = r.split_once(']').ok_or_else(invalid)?;
            let mut it = f.trim().splitn(3, char::is_whitespace);
            let (k, op, v) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
            let v = match serde_json::from_str::<Value>(v.trim()) {
                Ok(Value::String(s)) => s,
                _ => return Err(invalid()),
            };
            if k.is_empty() || !op.eq_ignore_ascii_case("eq") {
                return Err(invalid());
            }
            (h, Some((k.to_string(), v)), t)
        }
        None => match rest.split_once('.') {
            Some((h, s)) => (h, None, if s.is_empty() { "" } else { &rest[h.len()..] }),
            None => (rest, None, ""),
        },
    };
    let sub = match tail {
        "" => None,
        t => Some(t.strip_prefix('.').filter(|s| !s.is_empty() && !s.contains(['.', '['])).ok_or_else(invalid)?.to_string()),
    };
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-');
    if !ok(head) || sub.as_deref().is_some_and(|s| !ok(s)) {
        return Err(invalid());
    }
    Ok(Path { urn, attr: head.to_string(), filter, sub })
}

/// The existing key spelled like `name` ignoring case (attribute names are
/// case-insensitive, RFC 7643 §2.1), or `name`.
fn key_of(o: &Map<String, Value>, name: &str) -> String {
    o.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_string())
}

fn object<'a>(v: &'a mut Value, what: &str) -> Result<&'a mut Map<String, Value>, ScimError> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().ok_or_else(|| bad("invalidPath", "invalid_path", format!("`{what}` is not a complex attribute")))
}

/// Applies one operation to a resource (user or group).
pub fn apply(resource: &mut Value, op: &Op) -> Result<(), ScimError> {
    match &op.path {
        None => {
            let value = op.value.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, v) in value {
                if k.eq_ignore_ascii_case("id") || k.eq_ignore_ascii_case("meta") || k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let path = parse_path(&k)?;
                set(resource, &path, op.kind, Some(v))?;
            }
            Ok(())
        }
        Some(p) => {
            let path = parse_path(p)?;
            if path.attr.eq_ignore_ascii_case("id") || path.attr.eq_ignore_ascii_case("meta") {
                return Err(bad("mutability", "invalid_path", format!("`{}` cannot be changed", path.attr)));
            }
            set(resource, &path, op.kind, op.value.clone())
        }
    }
}

fn set(resource: &mut Value, path: &Path, kind: Kind, value: Option<Value>) -> Result<(), ScimError> {
    let root = object(resource, "resource")?;
    let container = match &path.urn {
        Some(u) => {
            let k = key_of(root, u);
            object(root.entry(k).or_insert(Value::Null), u)?
        }
        None => root,
    };
    let key = key_of(container, &path.attr);
    match (&path.filter, &path.sub) {
        (None, None) => {
            match (kind, value) {
                (Kind::Remove, None) => {
                    container.remove(&key);
                }
                (Kind::Remove, Some(Value::Array(drop))) => {
                    if let Some(Value::Array(have)) = container.get_mut(&key) {
                        have.retain(|x| !drop.iter().any(|d| same(x, d)));
                    }
                }
                (Kind::Remove, Some(_)) => {
                    container.remove(&key);
                }
                (Kind::Add, Some(Value::Array(add))) => match container.get_mut(&key) {
                    Some(Value::Array(have)) => {
                        for a in add {
                            if !have.iter().any(|x| same(x, &a)) {
                                have.push(a);
                            }
                        }
                    }
                    _ => {
                        container.insert(key, Value::Array(add));
                    }
                },
                (_, Some(v)) => {
                    container.insert(key, v);
                }
                (_, None) => return Err(bad("invalidValue", "invalid_value", "add and replace need a `value`")),
            }
            Ok(())
        }
        (None, Some(sub)) => {
            let inner = object(container.entry(key.clone()).or_insert(Value::Null), &key)?;
            let sk = key_of(inner, sub);
            match value.filter(|_| kind != Kind::Remove) {
                Some(v) => inner.insert(sk, v),
                None => inner.remove(&sk),
            };
            Ok(())
        }
        (Some((fk, fv)), sub) => {
            let list = container.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(list) = list else {
                return Err(bad("invalidPath", "invalid_path", format!("`{key}` is not multi-valued")));
            };
            let matches = |x: &Value| x.as_object().is_some_and(|o| o.get(&key_of(o, fk)).and_then(Value::as_str) == Some(fv.as_str()));
            if kind == Kind::Remove {
                match sub {
                    None => list.retain(|x| !matches(x)),
                    Some(s) => list.iter_mut().filter(|x| matches(x)).for_each(|x| {
                        if let Some(o) = x.as_object_mut() {
                            let k = key_of(o, s);
                            o.remove(&k);
                        }
                    }),
                }
                return Ok(());
            }
            let v = value.ok_or_else(|| bad("invalidValue", "invalid_value", "add and replace need a `value`"))?;
            if !list.iter().any(matches) {
                list.push(serde_json::json!({ fk.clone(): fv.clone() }));
            }
            for x in list.iter_mut().filter(|x| matches(x)) {
                match (sub, x.as_object_mut()) {
                    (Some(s), Some(o)) => {
                        let k = key_of(o, s);
                        o.insert(k, v.clone());
                    }
                    (None, Some(o)) => {
                        if let Some(vo) = v.as_object() {
                            for (k, vv) in vo {
                                o.insert(k.clone(), vv.clone());
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// Whether two values of a multi-valued attribute are the same: equal `value`s
/// (members, emails), or equal as a whole.
fn same(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(mut v: Value, body: Value) -> Value {
        for op in ops(&body).unwrap() {
            apply(&mut v, &op).unwrap();
        }
        v
    }

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
    }

    #[test]
    fn entra_active_false_as_a_string() {
        let u = patch(json!({"active": true}), body(json!([{"op": "Replace", "path": "active", "value": "False"}])));
        assert_eq!(boolean(&u["active"]), Some(false));
    }

    #[test]
    fn okta_path_less_active_false() {
        let u = patch(json!({"active": true}), body(json!([{"op": "replace", "value": {"active": false}}])));
        assert_eq!(u["active"], json!(false));
    }

    #[test]
    fn entra_email_and_name_paths() {
        let u = patch(
            json!({"emails": [{"type": "work", "value": "a@x", "primary": true}], "name": {"givenName": "A"}}),
            body(json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@x"},
                {"op": "Replace", "path": "name.familyName", "value": "Z"},
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
            ])),
        );
        assert_eq!(u["emails"][0]["value"], "b@x");
        assert_eq!(u["name"], json!({"givenName": "A", "familyName": "Z"}));
        assert_eq!(u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "R&D");
    }

    #[test]
    fn members_add_and_remove() {
        let g = json!({"displayName": "g", "members": [{"value": "1"}]});
        let g = patch(g, body(json!([{"op": "Add", "path": "members", "value": [{"value": "1"}, {"value": "2"}, {"value": "3"}]}])));
        assert_eq!(g["members"].as_array().unwrap().len(), 3);
        let g = patch(g, body(json!([{"op": "remove", "path": "members[value eq \"2\"]"}])));
        let g = patch(g, body(json!([{"op": "Remove", "path": "members", "value": [{"value": "1"}]}])));
        assert_eq!(g["members"], json!([{"value": "3"}]));
    }

    #[test]
    fn bad_patches_are_refused() {
        for b in [
            json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}),
            body(json!([])),
            body(json!([{"op": "move", "path": "active", "value": false}])),
            body(json!([{"op": "remove"}])),
            body(json!([{"op": "replace", "value": "False"}])),
        ] {
            assert_eq!(ops(&b).unwrap_err().status, 400, "{b}");
        }
        for p in ["emails[type co \"w\"].value", "a.b.c", "a[", "", "a b"] {
            assert!(parse_path(p).is_err(), "{p}");
        }
    }
}
