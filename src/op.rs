//! Pieces of an OpenID Provider shared by the two idfabric runs: the broker (idfabric as
//! the provider of downstream apps) and the dev provider's OP endpoints
//! (`providers::dev_op`), and by the relying party's check of them (`providers`). Below
//! all three, it knows none of them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The provider metadata both OPs publish (OpenID Connect Discovery 1.0 §3,
/// https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata): the
/// endpoints under `base` (`/authorize`, `/token`, `/jwks`, `/logout`), the code flow
/// with PKCE S256 only, public subjects.
pub struct Metadata<'a> {
    pub issuer: &'a str,
    /// Where the endpoints live (no trailing `/`).
    pub base: &'a str,
    /// `id_token_signing_alg_values_supported`.
    pub signing_algs: Vec<String>,
    /// `grant_types_supported`.
    pub grant_types: &'a [&'a str],
    /// `token_endpoint_auth_methods_supported`.
    pub token_auth_methods: &'a [&'a str],
}

impl Metadata<'_> {
    /// The document; an OP adds its own further fields to it.
    pub fn document(&self) -> serde_json::Map<String, serde_json::Value> {
        let b = self.base;
        let serde_json::Value::Object(m) = serde_json::json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{b}/authorize"),
            "token_endpoint": format!("{b}/token"),
            "jwks_uri": format!("{b}/jwks"),
            "end_session_endpoint": format!("{b}/logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": self.signing_algs,
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": self.grant_types,
            "token_endpoint_auth_methods_supported": self.token_auth_methods,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        m
    }
}

/// `at_hash` (OpenID Connect Core §3.1.3.6, https://openid.net/specs/openid-connect-core-1_0.html#CodeIDToken):
/// the base64url left half of the access token's hash, with the hash of the ID token's
/// JWS `alg` (`*384` SHA-384; `*512` and `EdDSA` SHA-512, as Ed25519 hashes with
/// SHA-512; otherwise SHA-256).
pub fn at_hash(alg: &str, access_token: &str) -> String {
    let algo = match alg {
        "EdDSA" => &aws_lc_rs::digest::SHA512,
        a if a.ends_with("384") => &aws_lc_rs::digest::SHA384,
        a if a.ends_with("512") => &aws_lc_rs::digest::SHA512,
        _ => &aws_lc_rs::digest::SHA256,
    };
    let d = aws_lc_rs::digest::digest(algo, access_token.as_bytes());
    let h = d.as_ref();
    URL_SAFE_NO_PAD.encode(&h[..h.len() / 2])
}

/// The JWS name (RFC 7518 §3.1, RFC 8037 §3.1) of a verification algorithm.
pub fn jws_name(alg: jsonwebtoken::Algorithm) -> &'static str {
    use jsonwebtoken::Algorithm::*;
    match alg {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_algs_hash() {
        // OpenID Connect Core, appendix A.3 (RS256).
        assert_eq!(at_hash("RS256", "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
        assert_eq!(at_hash(jws_name(jsonwebtoken::Algorithm::ES256), "x"), at_hash("RS256", "x"));
        assert_eq!(at_hash("ES384", "x").len(), 32, "24 of 48 bytes, base64url");
        assert_eq!(at_hash("EdDSA", "x"), at_hash("RS512", "x"));
    }
}
