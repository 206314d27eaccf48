//! `server.trusted_proxies` and `server.public_url`: how idfabric learns the client's
//! address, scheme and host behind an ingress. Parsed by the types `crate::forwarded`
//! reads at request time, so what `check` accepts is exactly what the proxy uses.

use super::super::error::Problems;
use super::super::EnvString;
use crate::forwarded::{PublicUrl, TrustedProxies};

/// Every entry a CIDR or a single address; each bad one reported with its position.
pub(super) fn trusted_proxies(list: Option<&[EnvString]>, p: &mut Problems) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, entry) in list.unwrap_or_default().iter().enumerate() {
        match TrustedProxies::parse_entry(entry) {
            Ok(net) => nets.push(net),
            Err(e) => p.at(None, "server.trusted_proxies", format!("entry {}: {e}", i + 1)),
        }
    }
    TrustedProxies::new(nets)
}

/// An absolute http(s) URL naming only an origin.
pub(super) fn public_url(v: Option<&str>, p: &mut Problems) -> Option<PublicUrl> {
    match PublicUrl::parse(v?) {
        Ok(u) => Some(u),
        Err(e) => {
            p.at(None, "server.public_url", e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ConfigErrors;
    use std::path::Path;

    fn load(routes: &str) -> Result<crate::config::Config, ConfigErrors> {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        std::fs::write(d.path().join("routes.yaml"), routes).unwrap();
        crate::config::load(&d.path().join("routes.yaml"), crate::providers::KINDS)
    }

    const HEAD: &str = "listen: { http: 127.0.0.1:8080 }\nroutes:\n  - name: a\n    upstream: [127.0.0.1:1]\n";

    #[test]
    fn trusted_proxies_public_url_and_forwarded_headers_load() {
        let c = load(&format!(
            "{HEAD}    forwarded_headers: false\nserver:\n  trusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.0.2.7]\n  public_url: https://app.example.com/\n"
        ))
        .unwrap();
        let s = &c.server;
        assert!(s.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
        assert!(s.trusted_proxies.contains("fd00::1".parse().unwrap()));
        assert!(s.trusted_proxies.contains("192.0.2.7".parse().unwrap()));
        assert!(!s.trusted_proxies.contains("192.0.2.8".parse().unwrap()));
        let p = s.public_url.as_ref().unwrap();
        assert_eq!((p.is_https(), p.authority()), (true, "app.example.com"));
        assert!(!c.routes[0].forwarded_headers);
    }

    #[test]
    fn defaults_trust_nobody() {
        let c = load(HEAD).unwrap();
        assert!(c.server.trusted_proxies.is_empty());
        assert!(c.server.public_url.is_none());
        assert!(c.routes[0].forwarded_headers);
    }

    #[test]
    fn bad_entries_are_reported_with_file_line_and_key() {
        let errs = load(&format!(
            "{HEAD}server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, example.com]\n  public_url: http://app.example.com/x\n"
        ))
        .unwrap_err()
        .0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{text:?}");
        for e in &errs {
            assert!(e.file.ends_with(Path::new("routes.yaml")), "{e}");
        }
        assert_eq!((errs[0].key.as_deref(), errs[0].line), (Some("server.trusted_proxies"), Some(6)));
        assert!(errs[0].message.contains("entry 2: `10.0.0.1/8` has host bits set"), "{text:?}");
        assert!(errs[1].message.contains("entry 3: `example.com` is not an IP address or CIDR"), "{text:?}");
        assert_eq!((errs[2].key.as_deref(), errs[2].line), (Some("server.public_url"), Some(7)));
        assert!(errs[2].message.contains("must not have a path"), "{text:?}");
    }
}
