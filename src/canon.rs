//! One canonical request path, read the same way by the router and by the upstream.
//!
//! Why: a gateway that matches routes on one reading of a path and forwards another
//! reading is an access-control bypass. With `/admin` restricted and `/` open, an
//! upstream that decodes `%61`, folds case, strips `;params` (Tomcat, Jetty), treats `\`
//! as `/` (IIS, Windows file APIs), merges `//` (nginx, most frameworks), or NFKC-folds
//! `／` into `/` (some Java and Python stacks) resolves `/%61dmin/x`, `/ADMIN/x`,
//! `/admin;x/x`, `/home/..;/admin/x` or `//admin/x` to `/admin/x` while a raw-path router
//! sent them through the open route. Every one of those was a real 200.
//!
//! So every request path goes through [`canonicalize`] before anything looks at it
//! (reserved paths, route lookup, forward-auth, `idfabric token inspect --url`), and the
//! proxied request carries the canonical path. The result is either:
//!
//! - a canonical path: RFC 3986 §6.2.2 normalisation
//!   (<https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2>): percent-encoded
//!   unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded, the remaining percent-
//!   encodings in upper-case hex, raw non-ASCII (valid UTF-8) percent-encoded, repeated
//!   slashes merged, then literal `.` / `..` segments removed (§5.2.4). Any two
//!   spellings that RFC-conforming software must treat as the same resource get the same
//!   canonical path; or
//! - a refusal ([`PathProblem`], answered as `400 invalid_path`): spellings whose meaning
//!   depends on who reads them, so that no single canonical form is safe to route on.
//!   Encoded `/` and `\` (`%2F`, `%5C`), a literal `\`, encoded dot segments (`%2e`,
//!   `.%2e`: refused rather than normalised, because only some stacks decode before
//!   resolving dots), dot segments carrying parameters (`..;`, `.;x`), encoded `;`,
//!   control characters (C0, DEL, C1, also encoded), whitespace at a segment's edges,
//!   malformed percent-encoding, invalid or overlong UTF-8 (`%c0%ae`), any double
//!   encoding (`%252e%252e`, `%252f`, also `%2561`: a stack that decodes twice reads
//!   `/%2561dmin` as `/admin`), and non-ASCII characters that
//!   some layer folds into ASCII (NFKC, Unicode case mapping: `／`, `．`, `ａｄｍｉｎ`,
//!   `ſ`, the Kelvin sign) or that look like `/`, `\` or `.` (`∕`, `⁄`, `。`, `｡`) or
//!   are invisible (default-ignorable code points).
//!
//! Path parameters (`;name=value` inside a segment, RFC 3986 §3.3) are kept in
//! [`CanonPath::path`] (what the upstream receives) and stripped in
//! [`CanonPath::route_path`] (what routes match); the gateway refuses them unless the
//! matched route sets `path_params: true`.
//!
//! The common case, a path of printable ASCII without `%`, `;`, `\`, `//` or `/.`, is
//! already canonical: one byte scan, no allocation.

use std::borrow::Cow;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Why a path has no safe canonical form (the `detail` of a `400 invalid_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`: one layer sees a separator where another sees data.
    EncodedSlash,
    /// A literal `\`: Windows and IIS (and WHATWG URL parsers) read it as `/`.
    Backslash,
    /// `%2e`, `.%2e`, `%2E%2E`: a dot segment only after decoding.
    EncodedDotSegment,
    /// `..;x`, `.;x`: Tomcat strips the parameter and then resolves the dot segment.
    DotSegmentWithParams,
    /// `;x` with nothing before it.
    EmptySegmentWithParams,
    /// `%3B`: a parameter separator only for stacks that decode first.
    EncodedSemicolon,
    /// A `;` parameter on a route without `path_params: true`.
    ParamsNotAllowed,
    /// C0, DEL or C1 control characters, also percent-encoded (`%00`, `%0A`, `%C2%85`).
    ControlCharacter,
    /// Whitespace at the start or end of a segment (`%20admin`, `admin%09`).
    EdgeWhitespace,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// Not UTF-8 after decoding: overlong forms (`%c0%ae`), surrogates, stray bytes.
    InvalidUtf8,
    /// Percent-encoding of a percent-encoding (`%252e%252e`, `%252f`, `%2500`, `%2561`).
    DoubleEncoding,
    /// A non-ASCII character that folds to ASCII or looks like `/`, `\` or `.`.
    UnicodeLookalike,
}

impl PathProblem {
    pub fn detail(self) -> &'static str {
        match self {
            PathProblem::NotAbsolute => "the path does not start with `/`",
            PathProblem::EncodedSlash => "the path contains an encoded `/` or `\\` (%2F, %5C)",
            PathProblem::Backslash => "the path contains a backslash",
            PathProblem::EncodedDotSegment => "the path contains a percent-encoded `.` or `..` segment",
            PathProblem::DotSegmentWithParams => "the path contains a `.` or `..` segment with `;` parameters",
            PathProblem::EmptySegmentWithParams => "the path contains a `;` parameter without a segment name",
            PathProblem::EncodedSemicolon => "the path contains an encoded `;` (%3B)",
            PathProblem::ParamsNotAllowed => "the path contains `;` parameters, which this route does not accept",
            PathProblem::ControlCharacter => "the path contains a control character",
            PathProblem::EdgeWhitespace => "a path segment starts or ends with whitespace",
            PathProblem::BadPercentEncoding => "the path contains `%` not followed by two hex digits",
            PathProblem::InvalidUtf8 => "the path does not decode to valid UTF-8",
            PathProblem::DoubleEncoding => "the path contains a double percent-encoding (`%25` followed by two hex digits)",
            PathProblem::UnicodeLookalike => {
                "the path contains a character that other software folds into `/`, `\\`, `.` or ASCII"
            }
        }
    }
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

/// Why a request target is not one idfabric routes (the `detail` of a `400 invalid_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetProblem {
    /// Neither origin-form, absolute-form (http/https) nor `OPTIONS *`.
    Form,
    /// `CONNECT`: idfabric is not a forward proxy.
    Connect,
    /// `*` with a method other than OPTIONS.
    Asterisk,
    /// The absolute-form authority and the `Host` header name different hosts.
    HostMismatch,
    /// HTTP/1.1 without `Host` (or an empty one) and not absolute-form.
    NoHost,
    /// The request target is not valid UTF-8.
    NotUtf8,
    // --- the original request a forward-auth check names (`crate::forward_auth`) ---
    /// `X-Original-URL` is not an absolute `http`/`https` URL without user information.
    ForwardedUrl,
    /// `X-Forwarded-Uri` / `X-Original-URI` is not origin-form (`/path?query`).
    ForwardedUri,
    /// The original host (`X-Forwarded-Host`, `Host`) is not one host name.
    ForwardedHost,
    /// `X-Forwarded-Proto` is neither `http` nor `https`.
    ForwardedProto,
    /// `X-Original-Method` / `X-Forwarded-Method` is not a method token.
    ForwardedMethod,
    /// Two headers (or a header and the check path) name different original requests,
    /// or one of them is repeated.
    ForwardedConflict,
    /// `/.idfabric/me?explain=1`: `method=` is not a method token, `path=` does not
    /// start with `/`, or `explain=` is neither `1`/`true` nor `0`/`false`.
    ExplainQuery,
}

impl TargetProblem {
    pub fn detail(self) -> &'static str {
        match self {
            TargetProblem::Form => "the request target is not origin-form (`/path`) or absolute-form (`http://host/path`)",
            TargetProblem::Connect => "CONNECT is not supported",
            TargetProblem::Asterisk => "the asterisk-form target `*` is only valid with OPTIONS",
            TargetProblem::HostMismatch => "the Host header differs from the request target's authority",
            TargetProblem::NoHost => "the request names no host (no Host header, not absolute-form)",
            TargetProblem::NotUtf8 => "the request target is not valid UTF-8",
            TargetProblem::ForwardedUrl => "X-Original-URL is not an absolute http(s) URL without user information",
            TargetProblem::ForwardedUri => "the forwarded URI (X-Forwarded-Uri, X-Original-URI) is not a path starting with `/`",
            TargetProblem::ForwardedHost => "the forwarded host (X-Forwarded-Host, Host) is not one host name",
            TargetProblem::ForwardedProto => "X-Forwarded-Proto is neither http nor https",
            TargetProblem::ForwardedMethod => "the forwarded method (X-Original-Method, X-Forwarded-Method) is not an HTTP method",
            TargetProblem::ForwardedConflict => {
                "the forwarded headers and the check path name different original requests, or one is repeated"
            }
            TargetProblem::ExplainQuery => {
                "the explanation query is not `explain=1` with an optional method token `method=` and a path starting with `/` in `path=`"
            }
        }
    }
}

impl fmt::Display for TargetProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

/// A canonical path: [`Self::path`] for the upstream, [`Self::route_path`] for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonPath<'a> {
    path: Cow<'a, str>,
    /// The path with `;params` stripped; `None` when it has none.
    stripped: Option<String>,
}

impl<'a> CanonPath<'a> {
    /// The canonical path, with `;params` as sent (canonicalised): what the upstream gets.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The canonical path without `;params`: what routes and reserved paths match.
    pub fn route_path(&self) -> &str {
        self.stripped.as_deref().unwrap_or(&self.path)
    }

    /// Whether any segment carries `;` parameters.
    pub fn has_params(&self) -> bool {
        self.stripped.is_some()
    }

    /// Whether the path was already canonical (it is then borrowed, not copied).
    pub fn unchanged(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }

    pub fn into_owned(self) -> CanonPath<'static> {
        CanonPath { path: Cow::Owned(self.path.into_owned()), stripped: self.stripped }
    }
}

/// The request-target forms idfabric serves (RFC 9112 §3.2,
/// <https://www.rfc-editor.org/rfc/rfc9112#section-3.2>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm<'a> {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query`: the authority is the routing host.
    Absolute { authority: &'a str, https: bool },
    /// `*` (OPTIONS only).
    Asterisk,
}

/// Classifies a raw request target; everything but origin-form, http(s) absolute-form
/// and `OPTIONS *` is refused (`admin/users`, `../x`, authority-form, CONNECT, other schemes).
pub fn target_form<'a>(method: &str, raw: &'a [u8]) -> Result<TargetForm<'a>, TargetProblem> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(TargetProblem::Connect);
    }
    match raw.first() {
        Some(b'/') => return Ok(TargetForm::Origin),
        Some(b'*') if raw.len() == 1 => {
            return if method == "OPTIONS" { Ok(TargetForm::Asterisk) } else { Err(TargetProblem::Asterisk) }
        }
        _ => {}
    }
    use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute { scheme, authority, .. } => {
            let https = scheme.eq_ignore_ascii_case(b"https");
            if !(https || scheme.eq_ignore_ascii_case(b"http")) || authority.is_empty() || authority.contains(&b'@') {
                return Err(TargetProblem::Form);
            }
            let authority = std::str::from_utf8(authority).map_err(|_| TargetProblem::NotUtf8)?;
            Ok(TargetForm::Absolute { authority, https })
        }
        _ => Err(TargetProblem::Form),
    }
}

/// Whether a `Host` header names the same host and port as an absolute-form authority:
/// case-insensitive, a trailing dot ignored, the scheme's default port implied.
pub fn same_authority(authority: &str, host: &str, https: bool) -> bool {
    let default = if https { "443" } else { "80" };
    let split = |a: &str| -> (String, String) {
        let a = a.trim();
        let (h, p) = if a.starts_with('[') {
            match a.split_once(']') {
                Some((h, rest)) => (format!("{h}]"), rest.strip_prefix(':').unwrap_or("").to_string()),
                None => (a.to_string(), String::new()),
            }
        } else {
            match a.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.to_string()),
                None => (a.to_string(), String::new()),
            }
        };
        let p = if p.is_empty() { default.to_string() } else { p };
        (h.trim_end_matches('.').to_ascii_lowercase(), p)
    };
    split(authority) == split(host)
}

/// The canonical form of `raw` (the path of a request target, without query), or why it
/// has none. Already-canonical paths are borrowed after a single byte scan.
pub fn canonicalize(raw: &str) -> Result<CanonPath<'_>, PathProblem> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathProblem::NotAbsolute);
    }
    // One pass: a byte outside the plain set, or `/` followed by `/` or `.`, needs the
    // slow path. Non-short-circuit operators keep the loop free of branches per byte.
    let mut prev_slash = false;
    for &c in b {
        let slash = c == b'/';
        if !PLAIN[c as usize] | (prev_slash & (slash | (c == b'.'))) {
            return slow(b);
        }
        prev_slash = slash;
    }
    Ok(CanonPath { path: Cow::Borrowed(raw), stripped: None })
}

/// Printable ASCII except `%`, `;` and `\\`: bytes that never need a second look.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x21;
    while c < 0x7f {
        t[c] = !matches!(c as u8, b'%' | b';' | b'\\');
        c += 1;
    }
    t
};

/// [`canonicalize`] for bytes that may not be UTF-8 (raw request lines, fuzzing).
pub fn canonicalize_bytes(raw: &[u8]) -> Result<CanonPath<'_>, PathProblem> {
    match std::str::from_utf8(raw) {
        Ok(s) => canonicalize(s),
        Err(_) if raw.first() != Some(&b'/') => Err(PathProblem::NotAbsolute),
        // Not UTF-8: `slow` names the first offending segment's problem.
        Err(_) => slow(raw).and(Err(PathProblem::InvalidUtf8)),
    }
}

/// One segment after decoding, ready to be joined.
enum Segment {
    Dot,
    DotDot,
    Name { text: String, name_len: usize },
}

fn slow(b: &[u8]) -> Result<CanonPath<'static>, PathProblem> {
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut trailing = false;
    let raw_segments: Vec<&[u8]> = b[1..].split(|&c| c == b'/').collect();
    let last = raw_segments.len() - 1;
    for (i, raw) in raw_segments.iter().enumerate() {
        trailing = false;
        if raw.is_empty() {
            // Merged with its neighbour; the last one is the trailing slash.
            trailing = i == last;
            continue;
        }
        match segment(raw)? {
            Segment::Dot => trailing = true,
            Segment::DotDot => {
                stack.pop();
                trailing = true;
            }
            Segment::Name { text, name_len } => stack.push((text, name_len)),
        }
    }
    let params = stack.iter().any(|(text, name_len)| *name_len < text.len());
    let join = |full: bool| {
        let mut out = String::with_capacity(b.len());
        for (text, name_len) in &stack {
            out.push('/');
            out.push_str(if full { text } else { &text[..*name_len] });
        }
        if out.is_empty() || trailing {
            out.push('/');
        }
        out
    };
    let path = join(true);
    let stripped = params.then(|| join(false));
    Ok(CanonPath { path: Cow::Owned(path), stripped })
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Canonicalises one raw segment (between slashes, non-empty).
fn segment(raw: &[u8]) -> Result<Segment, PathProblem> {
    let (name_raw, params_raw) = match raw.iter().position(|&c| c == b';') {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw, None),
    };
    let mut text = String::with_capacity(raw.len() + 8);
    let name = part(name_raw, &mut text)?;
    if name == "." || name == ".." {
        if params_raw.is_some() {
            return Err(PathProblem::DotSegmentWithParams);
        }
        if name_raw.contains(&b'%') {
            return Err(PathProblem::EncodedDotSegment);
        }
        return Ok(if name == "." { Segment::Dot } else { Segment::DotDot });
    }
    let name_len = text.len();
    if let Some(p) = params_raw {
        if name.is_empty() {
            return Err(PathProblem::EmptySegmentWithParams);
        }
        // Each `;`-separated parameter is checked like a name (its own edges).
        for param in p[1..].split(|&c| c == b';') {
            text.push(';');
            part(param, &mut text)?;
        }
    }
    Ok(Segment::Name { text, name_len })
}

/// Canonicalises one `;`-free part of a segment into `out`; returns the decoded part.
fn part(raw: &[u8], out: &mut String) -> Result<String, PathProblem> {
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        match c {
            b'%' => {
                let v = match (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => h * 16 + l,
                    _ => return Err(PathProblem::BadPercentEncoding),
                };
                match v {
                    b'/' | b'\\' => return Err(PathProblem::EncodedSlash),
                    b';' => return Err(PathProblem::EncodedSemicolon),
                    0..=0x1f | 0x7f => return Err(PathProblem::ControlCharacter),
                    v if is_unreserved(v) => out.push(v as char),
                    v => push_encoded(out, v),
                }
                decoded.push(v);
                i += 3;
            }
            b'\\' => return Err(PathProblem::Backslash),
            0..=0x20 | 0x7f => return Err(PathProblem::ControlCharacter),
            0x80..=0xff => {
                push_encoded(out, c);
                decoded.push(c);
                i += 1;
            }
            _ => {
                out.push(c as char);
                decoded.push(c);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(decoded).map_err(|_| PathProblem::InvalidUtf8)?;
    check_decoded(&text)?;
    if text.contains('%') {
        double_encoding(&text)?;
    }
    Ok(text)
}

fn push_encoded(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(v >> 4) as usize] as char);
    out.push(HEX[(v & 15) as usize] as char);
}

/// Checks on the decoded text of a segment part: edges, controls, look-alikes.
fn check_decoded(text: &str) -> Result<(), PathProblem> {
    if !text.is_ascii() && text.chars().any(char::is_control) {
        return Err(PathProblem::ControlCharacter);
    }
    let edge = |c: Option<char>| c.is_some_and(char::is_whitespace);
    if edge(text.chars().next()) || edge(text.chars().next_back()) {
        return Err(PathProblem::EdgeWhitespace);
    }
    if text.is_ascii() {
        return Ok(());
    }
    if text.chars().any(|c| !c.is_ascii() && is_lookalike(c)) {
        return Err(PathProblem::UnicodeLookalike);
    }
    // Compositions across characters: the NFKC form must not gain a separator or dot segment.
    let nfkc: String = text.nfkc().collect();
    if nfkc != text && (nfkc.contains(['/', '\\', ';']) || nfkc == "." || nfkc == "..") {
        return Err(PathProblem::UnicodeLookalike);
    }
    Ok(())
}

/// Refuses text that decoding once more would change (`%2561` in the request, `%61`
/// after one decoding). Refusing only what a second decoding turns into something
/// refused here (`%252e%252e`, `%252f`, `%2500`) is not enough: a stack that decodes
/// twice reads `/%2561dmin` as `/admin` while routes see `/%2561dmin`. A `%25` not
/// followed by two hex digits (`/100%25`) decodes to itself and is kept.
fn double_encoding(text: &str) -> Result<(), PathProblem> {
    let b = text.as_bytes();
    let encoded = b.windows(3).any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some());
    if encoded {
        return Err(PathProblem::DoubleEncoding);
    }
    Ok(())
}

/// Characters that look like or are read as `/`, `\` or `.` without an NFKC mapping to
/// them (division and fraction slashes, ideographic full stops, overlays).
const CONFUSABLE: &[char] = &[
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{2216}', // SET MINUS
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F8}', // BIG SOLIDUS
    '\u{29F9}', // BIG REVERSE SOLIDUS
    '\u{27CB}', // MATHEMATICAL RISING DIAGONAL
    '\u{27CD}', // MATHEMATICAL FALLING DIAGONAL
    '\u{3033}', // VERTICAL KANA REPEAT MARK UPPER HALF
    '\u{0338}', // COMBINING LONG SOLIDUS OVERLAY
    '\u{0337}', // COMBINING SHORT SOLIDUS OVERLAY
    '\u{3002}', // IDEOGRAPHIC FULL STOP (UTS #46 maps it to `.`)
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{FE12}', // PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC FULL STOP
    '\u{0701}', // SYRIAC SUPRALINEAR FULL STOP
    '\u{0702}', // SYRIAC SUBLINEAR FULL STOP
    '\u{A60E}', // VAI FULL STOP
    '\u{10A50}', // KHAROSHTHI PUNCTUATION DOT
    '\u{0660}', // ARABIC-INDIC DIGIT ZERO (renders as a dot)
    '\u{06F0}', // EXTENDED ARABIC-INDIC DIGIT ZERO
    '\u{2E31}', // WORD SEPARATOR MIDDLE DOT
    '\u{00B7}', // MIDDLE DOT
    '\u{2027}', // HYPHENATION POINT
    '\u{2219}', // BULLET OPERATOR
    '\u{22C5}', // DOT OPERATOR
];

/// Default-ignorable code points (Unicode DerivedCoreProperties): invisible, and removed
/// by some normalisers (UTS #46 mapping), so `ad\u{AD}min` could become `admin`.
fn is_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// A non-ASCII character that some layer reads as ASCII (NFKC, Unicode upper/lower case
/// mapping, as Java's `equalsIgnoreCase` does), or as a separator or dot, or not at all.
fn is_lookalike(c: char) -> bool {
    CONFUSABLE.contains(&c)
        || is_ignorable(c)
        || c.is_whitespace()
        || std::iter::once(c).nfkc().any(|d| d.is_ascii())
        || case_maps_to_ascii(c.to_lowercase())
        || case_maps_to_ascii(c.to_uppercase())
}

/// A case mapping onto one ASCII letter, possibly followed by combining marks: the Kelvin
/// sign, `ſ` (upper case `S`), `ı` (upper case `I`), `İ` (lower case `i` + dot above).
/// `ß` → `SS` is a length-changing mapping that no case-insensitive comparison of
/// characters applies, so German paths stay usable.
fn case_maps_to_ascii(mut mapped: impl Iterator<Item = char>) -> bool {
    match mapped.next() {
        Some(first) if first.is_ascii() => mapped.all(|c| ('\u{300}'..='\u{36f}').contains(&c)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
