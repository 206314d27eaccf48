//! A route's adaptive-MFA settings (`sensitive:`) compiled into `crate::risk::RiskSpec`:
//! methods upper-cased and checked, path globs compiled the way `policy` path globs
//! are (whole canonical path, `*` stays within a segment, case folded unless the route
//! is `case_sensitive`). Every problem is reported with the route, key and line.

use super::super::error::Problems;
use super::super::raw;
use crate::risk::{RiskSpec, Sensitive};

/// The route's `RiskSpec` when it is adaptive (`mfa: adaptive` or a `risk: low` rule);
/// `sensitive:` on a route that is not is refused (it would do nothing).
pub(super) fn spec(s: Option<&raw::Sensitive>, adaptive: bool, case_sensitive: bool, anchor: Option<&str>, p: &mut Problems) -> Option<RiskSpec> {
    if !adaptive {
        if s.is_some() {
            p.at(anchor, "routes.sensitive", "has no effect without `require: { mfa: adaptive }` or a policy rule with `risk: low`");
        }
        return None;
    }
    let Some(s) = s else { return Some(RiskSpec::default()) };
    let methods = match &s.methods {
        None => Sensitive::default().methods,
        Some(list) => {
            let mut out = Vec::new();
            for m in list {
                let up = m.to_ascii_uppercase();
                if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
                    p.at_value(anchor, "routes.sensitive.methods", m, format!("`{}` is not an HTTP method", &**m));
                }
                out.push(up);
            }
            out
        }
    };
    let paths = s.paths.as_ref().and_then(|list| {
        let mut b = globset::GlobSetBuilder::new();
        for g in list {
            if !g.starts_with('/') {
                p.at_value(anchor, "routes.sensitive.paths", g, format!("`{}` must start with `/` (it is matched against the whole request path)", &**g));
                return None;
            }
            match globset::GlobBuilder::new(g).literal_separator(true).case_insensitive(!case_sensitive).build() {
                Ok(glob) => {
                    b.add(glob);
                }
                Err(e) => {
                    p.at_value(anchor, "routes.sensitive.paths", g, format!("`{}` is not a glob: {}", &**g, e.kind()));
                    return None;
                }
            }
        }
        match b.build() {
            Ok(set) => Some(set),
            Err(e) => {
                p.at(anchor, "routes.sensitive.paths", format!("globs do not compile: {e}"));
                None
            }
        }
    });
    Some(RiskSpec { sensitive: Sensitive { methods, paths } })
}
