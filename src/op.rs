//! Pieces of an OpenID Provider shared by the two idfabric runs: the broker (idfabric as
//! the provider of downstream apps) and the dev provider's OP endpoints
//! (`providers::dev_op`). Below both, it knows neither.

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
