//! idfabric: an identity-fabric gateway on Pingora.
//!
//! Module map, in pipeline order (docs/design.md has the boundaries and the import
//! rules a test checks):
//!
//! - [`config`]: `routes.yaml` and `providers/*.yaml`, strict, `${ENV}`-expanded and
//!   validated into immutable specs with every problem reported at once.
//! - [`runtime`]: one config compiled for the request path (route table, upstream
//!   pools, registry, minter); swapped whole on reload. [`dns`]: upstream names
//!   resolved while serving.
//! - [`credential`]: finds the bearer token or session cookie.
//! - [`providers`]: the provider registry, JWKS caching, verification and one file per
//!   provider kind mapping its dialect to the one [`identity::Identity`].
//! - [`policy`]: route requirements → allow or the refusal naming what is unmet.
//! - [`pipeline`]: credential → verify → decide, shared by the proxy, forward-auth and
//!   `token inspect`.
//! - [`propagate`]: identity headers and the broker-minted `X-Identity-Token`.
//! - [`forward_auth`]: `/.idfabric/auth` for front proxies: which request a check is
//!   about (each proxy's headers), answered by the same pipeline.
//! - [`refusal`]: every refusal with its status, reason and challenge.
//! - [`web`]: request/reply values, cookies, the browser binding and the HTML pages
//!   shared by every endpoint idfabric serves itself.
//! - [`login`]: browser sign-in (the relying-party flow); [`session`]: browser sessions,
//!   sign-ins in progress and `session_for`; [`upstream`]: requests to an upstream
//!   provider's token endpoint.
//! - [`forwarded`]: the client's address, scheme and host behind trusted proxies
//!   (`server.trusted_proxies`, `server.public_url`).
//! - [`gateway`]: thin Pingora `ProxyHttp` glue; [`admin`]: metrics and health;
//!   [`server`]: service assembly; [`cli`]: the command line.
//! - [`keys`]: key generation and JWS signing; [`op`]: what the broker, the dev
//!   provider and the relying party's checks share (discovery metadata, `at_hash`); [`echo`]: the demo upstream.
//! - [`broker`]: idfabric as an OpenID Provider for downstream apps (code + PKCE,
//!   refresh-token families, client credentials, userinfo, introspection, revocation).
//! - [`reload`] and [`watch`]: SIGHUP and file-change reloads; [`tls`]: the listener
//!   certificate, swapped in when its files change; [`audit`]: one JSON
//!   line per auth decision; [`trace`]: `X-Request-Id` and W3C `traceparent`;
//!   [`access`]: access-review evidence and `report access`.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod broker;
pub mod audit;
pub mod canon;
pub mod cli;
pub mod config;
pub mod credential;
pub mod deny;
pub mod dns;
pub mod echo;
pub mod forward_auth;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod identity;
pub mod journey;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod op;
pub mod pipeline;
pub mod policy;
pub mod propagate;
pub mod providers;
pub mod refusal;
pub mod reload;
pub mod revocation;
pub mod risk;
pub mod runtime;
pub mod scim;
pub mod server;
pub mod session;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod watch;
pub mod web;
