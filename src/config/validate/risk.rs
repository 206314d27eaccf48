//! A route's adaptive-MFA settings (`sensitive:`) compiled into `crate::risk::RiskSpec`:
//! methods upper-cased and checked, path globs compiled the way `policy` path globs
//! are (whole canonical path, `*` stays within a segment, case folded unless the route
//! is `case_sensitive`). Every problem is reported with the route, key and line.

use super::super::error::Problems;
use super::super::raw;
use crate::config::risk::{RiskSpec, Sensitive};

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(routes: &str) -> Result<crate::config::Config, Vec<crate::config::ConfigError>> {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        std::fs::write(d.path().join("routes.yaml"), routes).unwrap();
        let okta = "id: corp-okta\nkind: okta\nissuer: https://example.okta.com/oauth2/default\naudiences: [api://default]\n";
        std::fs::write(d.path().join("providers/okta.yaml"), okta).unwrap();
        let path: &Path = &d.path().join("routes.yaml");
        super::super::load(path, crate::providers::KINDS).map_err(|e| e.0)
    }

    const HEAD: &str = "listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes:\n";

    #[test]
    fn policy_adaptive_mfa_compiles_with_default_and_given_sensitive_settings() {
        let c = load(&format!(
            "{HEAD}  - name: shop\n    upstream: [127.0.0.1:1]\n    require: {{ population: customer, mfa: adaptive }}\n\
             \x20 - name: acct\n    upstream: [127.0.0.1:1]\n    require: {{ mfa: adaptive }}\n    sensitive: {{ methods: [delete], paths: [\"/account/**\"] }}\n\
             \x20 - name: plain\n    upstream: [127.0.0.1:1]\n    require: {{ mfa: true }}\n\
             \x20 - name: lang\n    upstream: [127.0.0.1:1]\n    policy: {{ allow: [{{ risk: low }}] }}\n"
        ))
        .unwrap();
        let r = |n: &str| c.routes.iter().find(|r| r.name == n).unwrap();
        let shop = r("shop");
        assert!(shop.require.adaptive_mfa && !shop.require.mfa);
        let s = &shop.risk.as_ref().expect("adaptive routes are assessed").sensitive;
        assert!(s.matches("POST", "/") && !s.matches("GET", "/account/x"), "default: state-changing methods");
        let s = &r("acct").risk.as_ref().unwrap().sensitive;
        assert!(s.matches("DELETE", "/") && !s.matches("POST", "/"), "methods as given");
        assert!(s.matches("GET", "/ACCOUNT/email"), "paths fold case like the route");
        assert!(r("plain").require.mfa && r("plain").risk.is_none(), "mfa: true is unchanged and not assessed");
        assert!(r("lang").risk.is_some(), "a `risk: low` rule makes the route assessed");
    }

    #[test]
    fn policy_adaptive_mfa_is_refused_where_it_cannot_apply() {
        let errs = load(&format!(
            "{HEAD}  - name: staff\n    upstream: [127.0.0.1:1]\n    require: {{ population: workforce, mfa: adaptive }}\n\
             \x20 - name: split\n    by_population:\n      workforce: {{ upstream: [127.0.0.1:1], require: {{ mfa: adaptive }} }}\n      customer: {{ upstream: [127.0.0.1:1] }}\n\
             \x20 - name: pointless\n    upstream: [127.0.0.1:1]\n    sensitive: {{ methods: [POST] }}\n"
        ))
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let line_of = |needle: &str| errs.iter().find(|e| e.to_string().contains(needle)).and_then(|e| e.line);
        assert!(text.iter().any(|t| t.contains("workforce routes keep mandatory MFA")), "{text:?}");
        assert_eq!(line_of("workforce routes keep mandatory MFA"), Some(6), "{text:?}");
        assert_eq!(errs.iter().filter(|e| e.to_string().contains("workforce routes keep mandatory MFA")).count(), 2, "{text:?}");
        assert_eq!(line_of("has no effect without"), Some(13), "{text:?}");
    }

    #[test]
    fn policy_mfa_typos_and_risk_levels_are_named() {
        let errs = load(&format!("{HEAD}  - name: typo\n    upstream: [127.0.0.1:1]\n    require: {{ mfa: adaptve }}\n")).unwrap_err();
        assert!(errs[0].to_string().contains("`adaptve` is not true, false or adaptive"), "{errs:?}");
        assert_eq!(errs[0].line, Some(6));
        let errs = load(&format!("{HEAD}  - name: level\n    upstream: [127.0.0.1:1]\n    policy: {{ allow: [{{ risk: high }}] }}\n")).unwrap_err();
        assert!(errs[0].to_string().contains("`high` is not `low`"), "{errs:?}");
        let errs = load(&format!(
            "{HEAD}  - name: bad\n    upstream: [127.0.0.1:1]\n    require: {{ mfa: adaptive }}\n    sensitive: {{ methods: [\"P O\"], paths: [account] }}\n"
        ))
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("`P O` is not an HTTP method")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("`account` must start with `/`")), "{text:?}");
        assert!(errs.iter().all(|e| e.line == Some(7)), "{errs:?}");
    }
}
