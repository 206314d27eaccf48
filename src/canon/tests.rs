//! Every class of spelling, several ways each, plus property tests: canonicalisation
//! never panics, is idempotent, and no accepted spelling reaches a laxer route than the
//! resource a lenient framework would resolve it to.

use super::*;
use proptest::prelude::*;

fn canon(p: &str) -> Result<String, PathProblem> {
    canonicalize(p).map(|c| c.path().to_string())
}

fn refused(p: &str) -> PathProblem {
    match canonicalize(p) {
        Ok(c) => panic!("{p:?} was accepted as {:?}", c.path()),
        Err(e) => e,
    }
}

#[test]
fn canonical_paths_are_borrowed() {
    for p in ["/", "/admin", "/admin/users", "/a/b/", "/file.txt", "/a.b/c", "/v1.2/x", "/a-b_c~d", "/a:b@c!$&'()*+,=", "/x?"] {
        let c = canonicalize(p).unwrap();
        assert!(c.unchanged(), "{p}");
        assert_eq!(c.path(), p);
        assert_eq!(c.route_path(), p);
        assert!(!c.has_params());
    }
    // Segments starting with `.` take the slow path but are canonical as they are.
    for p in ["/..a/b", "/.well-known/openid-configuration", "/a/.git", "/.idfabric/me"] {
        assert_eq!(canon(p).unwrap(), p);
    }
}

#[test]
fn unreserved_characters_are_decoded() {
    for (raw, want) in [
        ("/%61dmin/users", "/admin/users"),
        ("/%61%64%6d%69%6e", "/admin"),
        ("/%41DMIN", "/ADMIN"),
        ("/a%2Db%5Fc%7Ed%2E", "/a-b_c~d."),
        ("/file%2etxt", "/file.txt"),
        ("/%7e/x", "/~/x"),
        ("/%30%39", "/09"),
    ] {
        assert_eq!(canon(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn other_percent_encodings_are_upper_cased_and_kept() {
    for (raw, want) in [
        ("/a%3fb", "/a%3Fb"),
        ("/a%23b", "/a%23B".replace("B", "b").as_str()),
        ("/my%20file", "/my%20file"),
        ("/%c3%a9t%c3%a9", "/%C3%A9t%C3%A9"),
        ("/100%25", "/100%25"),
        ("/a%2bb", "/a%2Bb"),
        ("/a%40b", "/a%40b"),
    ] {
        assert_eq!(canon(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn raw_utf8_is_percent_encoded() {
    assert_eq!(canon("/café").unwrap(), "/caf%C3%A9");
    assert_eq!(canon("/straße").unwrap(), "/stra%C3%9Fe");
    assert_eq!(canon("/日本").unwrap(), "/%E6%97%A5%E6%9C%AC");
}

#[test]
fn slashes_are_merged_and_dot_segments_removed() {
    for (raw, want) in [
        ("//admin/users", "/admin/users"),
        ("///admin//users//", "/admin/users/"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/static/../admin/users", "/admin/users"),
        ("/static/x/../../admin", "/admin"),
        ("/..", "/"),
        ("/../..", "/"),
        ("/../admin", "/admin"),
        ("/./", "/"),
        ("/a//../b", "/b"),
        ("/home/./../admin/users", "/admin/users"),
    ] {
        assert_eq!(canon(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn encoded_separators_are_refused() {
    for p in ["/admin%2fusers", "/admin%2Fusers", "/admin%5cusers", "/admin%5Cusers", "/%2f", "/a/%2F/b", "/static/%2e%2e%2fadmin"] {
        let e = refused(p);
        assert!(matches!(e, PathProblem::EncodedSlash | PathProblem::EncodedDotSegment), "{p}: {e:?}");
    }
    for p in ["/admin\\users", "/static\\..\\admin", "\\/admin", "/\\admin", "/a\\"] {
        let e = canonicalize(p).unwrap_err();
        assert!(matches!(e, PathProblem::Backslash | PathProblem::NotAbsolute), "{p}: {e:?}");
    }
}

#[test]
fn encoded_dot_segments_are_refused() {
    for p in ["/%2e", "/%2E", "/%2e%2e", "/%2E%2E/admin", "/.%2e/admin", "/%2e./admin", "/static/%2e%2e/admin", "/a/%2e/b", "/x/.%2E"] {
        assert_eq!(refused(p), PathProblem::EncodedDotSegment, "{p}");
    }
}

#[test]
fn dot_segments_with_params_are_refused() {
    for p in ["/home/..;/admin/users", "/..;/admin", "/.;/admin", "/a/..;x=1/b", "/static/.;jsessionid=1/x", "/%2e%2e;/admin", "/.%2e;a/b"] {
        assert_eq!(refused(p), PathProblem::DotSegmentWithParams, "{p}");
    }
    for p in ["/;x/admin", "/a/;/b", "/;"] {
        assert_eq!(refused(p), PathProblem::EmptySegmentWithParams, "{p}");
    }
    for p in ["/admin%3bx/users", "/admin%3B/users", "/a%3b"] {
        assert_eq!(refused(p), PathProblem::EncodedSemicolon, "{p}");
    }
}

#[test]
fn params_are_kept_for_the_upstream_and_stripped_for_routing() {
    let c = canonicalize("/admin;x/users").unwrap();
    assert_eq!(c.path(), "/admin;x/users");
    assert_eq!(c.route_path(), "/admin/users");
    assert!(c.has_params());
    let c = canonicalize("/app;jsessionid=%61b;v=1/%61/").unwrap();
    assert_eq!(c.path(), "/app;jsessionid=ab;v=1/a/");
    assert_eq!(c.route_path(), "/app/a/");
    let c = canonicalize("/a;p/../b").unwrap();
    assert_eq!(c.path(), "/b");
    assert!(!c.has_params());
    assert_eq!(refused("/a;%2f"), PathProblem::EncodedSlash);
    assert_eq!(refused("/a;%00"), PathProblem::ControlCharacter);
}

#[test]
fn control_characters_are_refused() {
    for p in ["/a%00", "/%00admin", "/a%0a", "/a%0D%0Ab", "/a%09b", "/a%7f", "/a%1b", "/a%c2%85", "/a%C2%9F", "/a\u{85}", "/a\u{7f}", "/a b", "/a\tb"] {
        assert_eq!(refused(p), PathProblem::ControlCharacter, "{p:?}");
    }
}

#[test]
fn whitespace_at_segment_edges_is_refused() {
    for p in ["/%20admin", "/admin%20", "/admin%20/users", "/a/%20", "/%e3%80%80admin", "/admin%c2%a0"] {
        let e = refused(p);
        assert!(matches!(e, PathProblem::EdgeWhitespace | PathProblem::UnicodeLookalike), "{p}: {e:?}");
    }
    assert_eq!(canon("/my%20file").unwrap(), "/my%20file");
}

#[test]
fn malformed_percent_encoding_is_refused() {
    for p in ["/%", "/a%", "/a%2", "/%zz", "/%g0", "/a%2/b", "/%%41"] {
        assert_eq!(refused(p), PathProblem::BadPercentEncoding, "{p}");
    }
}

#[test]
fn invalid_and_overlong_utf8_is_refused() {
    for p in ["/%c0%ae", "/%c0%ae%c0%ae/admin", "/%e0%80%ae", "/%f0%80%80%ae", "/%80", "/a%bf", "/%ed%a0%80", "/%ed%bf%bf", "/%c3", "/%c3/%a9", "/%f8%88%80%80%80", "/%ff"] {
        assert_eq!(refused(p), PathProblem::InvalidUtf8, "{p}");
    }
    assert_eq!(canonicalize_bytes(b"/a\xffb").unwrap_err(), PathProblem::InvalidUtf8);
    assert_eq!(canonicalize_bytes(b"/\xc0\xae").unwrap_err(), PathProblem::InvalidUtf8);
    assert_eq!(canonicalize_bytes(b"/%2f\xff").unwrap_err(), PathProblem::EncodedSlash);
}

#[test]
fn double_encoding_of_refused_things_is_refused() {
    for p in [
        "/%252e%252e/admin", "/static/%252e%252e/admin", "/admin%252fusers", "/admin%255cusers", "/a%2500", "/%252E",
        "/a%253bx", "/%25c0%25ae", "/%25252e%25252e", "/%2520admin", "/a%250a", "/%2561dmin/users", "/a%252Etxt",
        "/%25%32%65", "/%2%35%32e",
    ] {
        let e = refused(p);
        assert!(matches!(e, PathProblem::DoubleEncoding | PathProblem::BadPercentEncoding), "{p}: {e:?}");
    }
    // `%25` not followed by two hex digits decodes to itself: kept as sent.
    assert_eq!(canon("/100%25").unwrap(), "/100%25");
    assert_eq!(canon("/100%25%25").unwrap(), "/100%25%25");
    assert_eq!(canon("/a%25zz").unwrap(), "/a%25zz");
}

#[test]
fn unicode_lookalikes_are_refused() {
    for c in [
        '\u{FF0F}', '\u{FF0E}', '\u{FF3C}', '\u{2215}', '\u{2044}', '\u{2024}', '\u{2025}', '\u{FF61}', '\u{3002}',
        '\u{FE52}', '\u{FE68}', '\u{2216}', '\u{29F8}', '\u{0338}', '\u{FF41}', '\u{212A}', '\u{017F}', '\u{0131}',
        '\u{0130}', '\u{FB01}', '\u{00AD}', '\u{200B}', '\u{FEFF}', '\u{2100}', '\u{00A0}', '\u{3000}',
    ] {
        let mut utf8 = [0u8; 4];
        let enc: String = c.encode_utf8(&mut utf8).bytes().map(|b| format!("%{b:02X}")).collect();
        for p in [format!("/adm{c}in"), format!("/admin{c}users"), format!("/x{enc}y"), format!("/{c}{c}/admin")] {
            let e = refused(&p);
            assert!(matches!(e, PathProblem::UnicodeLookalike | PathProblem::EdgeWhitespace), "{p:?}: {e:?}");
        }
    }
    assert_eq!(refused("/\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}/users"), PathProblem::UnicodeLookalike);
    // Ordinary non-ASCII letters are fine.
    for p in ["/caf%C3%A9", "/stra%C3%9Fe", "/%E6%97%A5", "/%D0%BF%D1%80%D0%B8"] {
        assert_eq!(canon(p).unwrap(), p);
    }
}

#[test]
fn not_absolute_is_refused() {
    for p in ["", "admin/users", "../admin", "*", "http://x/"] {
        assert_eq!(refused(p), PathProblem::NotAbsolute, "{p}");
    }
}

#[test]
fn target_forms() {
    assert_eq!(target_form("GET", b"/x?y"), Ok(TargetForm::Origin));
    assert_eq!(target_form("OPTIONS", b"*"), Ok(TargetForm::Asterisk));
    assert_eq!(target_form("GET", b"*"), Err(TargetProblem::Asterisk));
    assert_eq!(
        target_form("GET", b"http://hr.localhost/x"),
        Ok(TargetForm::Absolute { authority: "hr.localhost", https: false })
    );
    assert_eq!(
        target_form("GET", b"HTTPS://a.test:8443?q"),
        Ok(TargetForm::Absolute { authority: "a.test:8443", https: true })
    );
    for t in [&b"admin/users"[..], b"../admin/users", b"host:443", b"ftp://x/y", b"http:/\\x/y", b"http:x", b"http://u@x/", b"ws://x/", b"", b"**"] {
        assert_eq!(target_form("GET", t), Err(TargetProblem::Form), "{}", String::from_utf8_lossy(t));
    }
    assert_eq!(target_form("CONNECT", b"x:443"), Err(TargetProblem::Connect));
    assert_eq!(target_form("CONNECT", b"/x"), Err(TargetProblem::Connect));
}

#[test]
fn authorities_compare_like_hosts() {
    assert!(same_authority("hr.localhost", "HR.localhost", false));
    assert!(same_authority("hr.localhost", "hr.localhost:80", false));
    assert!(same_authority("hr.localhost:443", "hr.localhost", true));
    assert!(same_authority("hr.localhost.", "hr.localhost", false));
    assert!(same_authority("[::1]:80", "[::1]", false));
    assert!(!same_authority("hr.localhost", "hr.localhost:8080", false));
    assert!(!same_authority("hr.localhost", "admin.localhost", false));
    assert!(!same_authority("hr.localhost:443", "hr.localhost", false));
}

// --- properties -----------------------------------------------------------------------

/// A deliberately lenient reading of a path, the union of what real stacks do: decode
/// repeatedly, `\` → `/`, NFKC, strip `;params`, merge slashes, resolve dot segments,
/// lower-case. `None` when it cannot make sense of the bytes.
fn lenient(raw: &str) -> Option<String> {
    let mut s = raw.as_bytes().to_vec();
    for _ in 0..5 {
        let next: Vec<u8> = percent_encoding::percent_decode(&s).collect();
        if next == s {
            break;
        }
        s = next;
    }
    let s = String::from_utf8(s).ok()?;
    let s: String = s.nfkc().collect::<String>().replace(['\\', '\u{2215}', '\u{2044}'], "/").replace(['\u{3002}', '\u{FF61}'], ".");
    let mut out: Vec<String> = Vec::new();
    let mut trailing = false;
    for seg in s.split('/').skip(1) {
        let name = seg.split(';').next().unwrap_or("");
        trailing = matches!(name, "" | "." | "..");
        match name {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            n => out.push(n.to_lowercase()),
        }
    }
    let tail = if trailing && !out.is_empty() { "/" } else { "" };
    Some(format!("/{}{tail}", out.join("/")))
}

/// The real route table (`RouteTable::find`) for routes of increasing strictness:
/// `/admin` (3), `/admin/public` (1, more specific and laxer), `/a.b` (2), `/` (1),
/// `/static/` (0). Built once from a routes.yaml through `config::load`.
fn runtime() -> &'static crate::runtime::Runtime {
    static RT: std::sync::OnceLock<crate::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        let mut yaml = String::from("listen: { http: 127.0.0.1:8080 }\nproviders: []\nroutes:\n");
        for (name, prefix) in [("l3", "/admin"), ("l1b", "/admin/public"), ("l0", "/static/"), ("l2", "/a.b"), ("l1", "/")] {
            yaml.push_str(&format!("  - {{ name: {name}, match: {{ path_prefix: {prefix} }}, auth: none, upstream: [127.0.0.1:1] }}\n"));
        }
        std::fs::write(d.path().join("routes.yaml"), yaml).unwrap();
        let config = crate::config::load(&d.path().join("routes.yaml"), crate::providers::KINDS).expect("config");
        crate::runtime::Runtime::build(config).expect("runtime")
    })
}

fn route_of(path: &str) -> u8 {
    match runtime().routes.find("any.test", path).map(|r| r.spec.name.as_str()) {
        Some("l3") => 3,
        Some("l2") => 2,
        Some("l1") | Some("l1b") => 1,
        _ => 0,
    }
}

fn alphabet() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "/", "/", "/", ".", "..", ";", "%", "\\", "A", "a", "d", "m", "i", "n", "2", "e", "f", "5", "c", "b", "s",
        "t", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%3b", "%61", "%41", "%00", "%20", "%c0%ae", "/admin",
        "/static/", "/ADMIN", "/admin/public", "\u{FF0F}", "\u{FF0E}", "\u{FF3C}", "\u{2215}", "\u{2044}", "\u{2024}",
        "\u{FF61}", "\u{3002}", "\u{FE52}", "\u{FF41}", "\u{212A}", "\u{017F}", "%EF%BC%8F", "%E2%80%A4", "..;", "/..;/",
    ]);
    prop::collection::vec(atoms, 0..14).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Accepted spellings never reach a laxer route than the resource they denote.
    #[test]
    fn no_accepted_spelling_reaches_a_laxer_route(raw in alphabet()) {
        if let Ok(c) = canonicalize(&raw) {
            let lenient_path = lenient(&raw);
            prop_assert!(lenient_path.is_some(), "{raw:?} accepted as {:?} but not decodable", c.path());
            let lp = lenient_path.unwrap();
            let ours = route_of(c.route_path());
            let theirs = route_of(&lp);
            prop_assert!(ours >= theirs, "{raw:?}: canonical {:?} -> level {ours}, lenient {lp:?} -> level {theirs}", c.route_path());
            // What the upstream receives reads the same to a lenient upstream.
            prop_assert_eq!(lenient(c.path()), Some(lp), "{:?}", raw);
        }
    }

    #[test]
    fn idempotent(raw in alphabet()) {
        if let Ok(c) = canonicalize(&raw) {
            let again = canonicalize(c.path()).expect("canonical form accepted");
            prop_assert_eq!(again.path(), c.path());
            prop_assert!(again.unchanged() || c.path().contains(['%', ';']) || c.path().contains("/."), "{:?}", c.path());
            prop_assert_eq!(again.route_path(), c.route_path());
        }
    }

    #[test]
    fn never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = canonicalize_bytes(&raw);
        let mut slashed = b"/".to_vec();
        slashed.extend_from_slice(&raw);
        if let Ok(c) = canonicalize_bytes(&slashed) {
            prop_assert!(c.path().is_ascii());
            let again = canonicalize(c.path()).unwrap();
            prop_assert_eq!(again.path(), c.path());
        }
    }

    #[test]
    fn never_panics_on_text(raw in "/[\\PC/.;%\\\\]{0,40}") {
        if let Ok(c) = canonicalize(&raw) {
            let again = canonicalize(c.path()).unwrap();
            prop_assert_eq!(again.path(), c.path());
        }
    }
}

#[test]
fn the_property_uses_the_real_route_table() {
    for (path, level) in [("/ADMIN/x", 3), ("/admin", 3), ("/Admin/Public/x", 1), ("/administrator", 1), ("/static/x", 0), ("/STATIC/", 0), ("/static", 1), ("/a.b/c", 2), ("/a.bc", 1)] {
        assert_eq!(route_of(path), level, "{path}");
    }
    assert_eq!(lenient("/static/%252e%252e/ADMIN;x//users"), Some("/admin/users".into()));
    assert_eq!(lenient("/a/b/.."), Some("/a/".into()));
}
