//! The `idfabric` command line (README.md lists the subcommands): each one parses its
//! flags, calls the library and words the final message for a person.

use crate::config::{self, Config};
use crate::providers::dev::section_of as dev_section;
use crate::keys;
use crate::pipeline;
use crate::providers::now_secs;
use crate::runtime::Runtime;
use crate::server;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "idfabric", version, about = "Identity-fabric gateway: one identity for workforce and customers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (proxy listener, admin listener, broker endpoints).
    Serve {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Take over the listening sockets of a running idfabric (graceful binary upgrade).
        #[arg(short, long)]
        upgrade: bool,
        /// Do not reload when the configuration files change (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate routes.yaml and the enabled provider files; without --offline also fetch
    /// each provider's discovery document and keys, and ping a Redis session store.
    Check {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        #[arg(long)]
        offline: bool,
        /// Also refuse what must not run in production (dev providers, plain-HTTP only).
        #[arg(long)]
        production: bool,
    },
    /// Inspect and mint tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Key material.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The embedded default: dev providers, an echo app and the gateway on routes.yaml.
    Demo {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Reports for reviewers.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Run only the built-in echo app (used by tests and benchmarks as an upstream).
    #[command(hide = true)]
    Echo {
        #[arg(long, required = true)]
        listen: Vec<std::net::SocketAddr>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Who accessed which workforce route and when, and who holds a route's required
    /// group but has not used it within the window (docs/operations.md, "Access review").
    Access {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The window: accesses since this long ago (e.g. 90d, 24h).
        #[arg(long, default_value = "90d")]
        since: String,
        #[arg(long, value_enum, default_value_t = crate::access::Format::Csv)]
        format: crate::access::Format,
        /// Ask this gateway's admin listener (default with a memory store: `admin:` of the config).
        #[arg(long)]
        admin: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Decode and verify a token, print its normalised identity and each route's decision;
    /// with --url, first print the canonical path of that URL and the route it selects.
    Inspect {
        /// The token, or `-` (or nothing, without --url) to read it from standard input.
        token: Option<String>,
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// A request URL (`http://host/path?query`): print the canonical path the gateway
        /// routes on and forwards, and the route it selects, or why it is refused.
        #[arg(long)]
        url: Option<String>,
        /// The method route policies are judged for (their `method` rules).
        #[arg(long, default_value = "GET")]
        method: String,
    },
    /// Print a token from a dev provider.
    Mint {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Mint an ID token instead of an access token.
        #[arg(long)]
        id_token: bool,
        /// Lifetime (e.g. 5m, 1h); default: the provider's token_ttl.
        #[arg(long)]
        ttl: Option<String>,
        /// Print this many distinct tokens, one per line.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// With --count: each token is a different user, `<user>-<n>` (own `sub` and ids,
        /// the rest of `--user`'s claims), e.g. for load tests of per-user work.
        #[arg(long)]
        distinct_users: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write dev-tls.crt/.key, broker-signing.pem, session.key and the dev providers' keys.
    Generate {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Replace the broker signing key; the old key stays published in `/jwks` for 24 h
    /// (longer than any token it signed lives), then is dropped.
    Rotate {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The key file to rotate (default: `broker.signing_key` of the config).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Algorithm of the new key.
        #[arg(long, value_enum, default_value_t = SigningAlg::Es256)]
        alg: SigningAlg,
    },
    /// Read a broker client secret from stdin and print its argon2id PHC hash, for
    /// `client_secret` in `routes.yaml` (docs/broker.md).
    HashSecret,
}

/// Broker signing algorithms (`keys rotate --alg`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SigningAlg {
    Es256,
    Rs256,
    Eddsa,
}

pub use crate::trace::init_tracing;

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path, crate::providers::KINDS).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(1)
    })
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, upgrade, no_watch } => serve(&config, upgrade, no_watch),
        Command::Report { command: ReportCommand::Access { config, since, format, admin } } => {
            match crate::access::cli_report(&config, &since, format, admin.as_deref()) {
                Ok(out) => {
                    print!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("idfabric: {e}");
                    Err(ExitCode::from(1))
                }
            }
        }
        Command::Check { config, offline, production } => check(&config, offline, production),
        Command::Token { command: TokenCommand::Inspect { token, config, url, method } } => match url {
            Some(url) => inspect_url(&config, &url, token, &method),
            None => inspect(&config, token, &method, None),
        },
        Command::Token { command: TokenCommand::Mint { provider, user, config, id_token, ttl, count, distinct_users } } => {
            mint(&config, &provider, &user, id_token, ttl.as_deref(), count, distinct_users)
        }
        Command::Keys { command: KeysCommand::Generate { dir, force } } => generate(&dir, force),
        Command::Keys { command: KeysCommand::Rotate { config, key, alg } } => rotate(&config, key, alg),
        Command::Keys { command: KeysCommand::HashSecret } => hash_secret(),
        Command::Demo { config } => demo(&config),
        Command::Echo { listen, threads } => {
            init_tracing();
            server::run_echo(listen, threads)
        }
    };
    result.unwrap_or_else(|code| code)
}

fn serve(path: &Path, upgrade: bool, no_watch: bool) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    // After the load: `tracing.otlp_endpoint` may add the OTLP exporter.
    crate::trace::init(&config.tracing).map_err(|e| {
        eprintln!("idfabric: {e}");
        ExitCode::from(1)
    })?;
    crate::metrics::metrics().config_reloads_total.with_label_values(&["success"]).inc();
    crate::reload::log_warnings(&config);
    server::run(config, server::RunOptions { upgrade, no_watch, ..Default::default() }).map_err(|e| {
        eprintln!("idfabric: {e}");
        ExitCode::from(1)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, offline: bool, production: bool) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let mut failed = false;
    if production {
        for p in &config.providers {
            if p.kind() == crate::identity::ProviderKind::Dev {
                eprintln!("{}: provider `{}` is a development provider and must not run in production", p.file.display(), p.id);
                failed = true;
            }
        }
        if config.listen_https.is_none() {
            eprintln!("{}: production needs an https listener (`listen.https`)", config.path.display());
            failed = true;
        }
    }
    // Rules that can never match or always match: worth a look, not a failure.
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if failed {
        println!("{}: configuration parses, but is not fit for production (see above)", config.path.display());
    } else {
        println!(
            "{}: configuration valid ({} provider(s), {} route(s)){}",
            config.path.display(),
            config.providers.len(),
            config.routes.len(),
            match config.warnings.len() {
                0 => String::new(),
                n => format!(", {n} warning(s) on standard error"),
            }
        );
    }
    if !offline {
        let rt = match Runtime::build(config.clone()) {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{e}");
                return Err(ExitCode::from(1));
            }
        };
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|_| ExitCode::from(1))?;
        if !check_store(&config, &tokio) {
            failed = true;
        }
        for p in &rt.registry.providers {
            if let Some(signer) = &p.dev_signer {
                println!("  {:<20} ok: dev provider, served by idfabric itself (key {})", p.id(), signer.kid);
                continue;
            }
            match tokio.block_on(p.refresh(&rt.registry.http)) {
                Ok(n) => println!("  {:<20} ok: discovery and JWKS fetched, {n} signing key(s)", p.id()),
                Err(e) => {
                    println!("  {:<20} FAILED: {e}", p.id());
                    failed = true;
                }
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `check` without `--offline`: a Redis session store answers `PING` over the same
/// connection idfabric will use (TLS, Sentinel, Cluster included).
fn check_store(config: &Config, tokio: &tokio::runtime::Runtime) -> bool {
    use crate::session::{redis_store::RedisStore, Store};
    let crate::config::SessionStore::Redis(target) = &config.session.store else { return true };
    let shown = crate::session::redis_store::redacted(target);
    let pinged = RedisStore::new(target).map(|s| tokio.block_on(async move { s.ping().await }));
    match pinged.and_then(|r| r) {
        Ok(()) => {
            println!("  {:<20} ok: {} store {shown} answers", "session.store", target.kind());
            true
        }
        Err(e) => {
            println!("  {:<20} FAILED: {shown}: {e}", "session.store");
            false
        }
    }
}

fn read_token(arg: Option<String>) -> Result<String, ExitCode> {
    match arg.as_deref() {
        Some(t) if t != "-" => Ok(t.trim().to_string()),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|_| ExitCode::from(2))?;
            Ok(s.trim().to_string())
        }
    }
}

/// `token inspect --url`: the canonical path and route of a URL, exactly as the proxy
/// decides them (`crate::canon`, `RouteTable::find`); then the token, if one was given.
fn inspect_url(path: &Path, url: &str, token: Option<String>, method: &str) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let rt = Runtime::build(config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })?;
    let out = url_decision(&rt, url);
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    let routed = out.get("route").is_some_and(|r| !r.is_null()) || out["reserved"] == true;
    // With a token: judged for the route this URL selects, at its path (the request the
    // gateway would judge); a URL that selects no route judges it per route as without --url.
    let target = match (out["route"].as_str(), out["route_path"].as_str(), out.get("status")) {
        (Some(route), Some(route_path), None) => Some((route.to_string(), route_path.to_string())),
        _ => None,
    };
    match token {
        Some(t) => inspect(path, Some(t), method, target.as_ref().map(|(r, p)| (r.as_str(), p.as_str()))),
        None => Ok(if routed { ExitCode::SUCCESS } else { ExitCode::from(1) }),
    }
}

/// The routing decision for one absolute URL, as JSON.
pub fn url_decision(rt: &Runtime, url: &str) -> serde_json::Value {
    use crate::canon::{self, PathProblem, TargetForm};
    use crate::refusal::Refusal;
    let refused = |r: Refusal| {
        serde_json::json!({"url": url, "status": r.status(), "reason": r.reason(), "detail": r.to_string(), "route": null})
    };
    let raw = url.as_bytes();
    let authority = match canon::target_form("GET", raw) {
        Ok(TargetForm::Absolute { authority, .. }) => authority,
        Ok(_) => return refused(Refusal::InvalidTarget(canon::TargetProblem::Form)),
        Err(p) => return refused(Refusal::InvalidTarget(p)),
    };
    // The path as sent: from the end of the authority to `?` or `#`, untouched by any URL parser.
    let after = &url[url.find("//").map(|i| i + 2).unwrap_or(0) + authority.len()..];
    let end = after.find(['?', '#']).unwrap_or(after.len());
    let raw_path = if end == 0 { "/" } else { &after[..end] };
    let path = match canon::canonicalize(raw_path) {
        Ok(p) => p,
        Err(p) => return refused(Refusal::InvalidPath(p)),
    };
    if crate::gateway::is_reserved(rt, path.route_path()) {
        if path.has_params() {
            return refused(Refusal::InvalidPath(PathProblem::ParamsNotAllowed));
        }
        return serde_json::json!({"url": url, "canonical_path": path.path(), "reserved": true, "route": null});
    }
    match rt.routes.find(authority, path.route_path()) {
        None if path.has_params() => refused(Refusal::InvalidPath(PathProblem::ParamsNotAllowed)),
        None => refused(Refusal::NoRoute),
        Some(r) if path.has_params() && !r.spec.path_params => {
            let mut out = refused(Refusal::InvalidPath(PathProblem::ParamsNotAllowed));
            out["route"] = r.spec.name.clone().into();
            out
        }
        Some(r) => serde_json::json!({
            "url": url,
            "canonical_path": path.path(),
            "route_path": path.route_path(),
            "route": r.spec.name,
            "reserved": false,
        }),
    }
}

/// Verifies `token` and explains the decision on every route at the route's own prefix,
/// or, with `target` (route name, path within it: from `--url`), on that route at that path.
fn inspect(path: &Path, token: Option<String>, method: &str, target: Option<(&str, &str)>) -> Result<ExitCode, ExitCode> {
    let token = read_token(token)?;
    let config = load(path)?;
    let rt = Runtime::build(config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|_| ExitCode::from(1))?;
    for p in &rt.registry.providers {
        if p.dev_signer.is_some() {
            p.install_dev_keys();
        } else if let Err(e) = tokio.block_on(p.refresh(&rt.registry.http)) {
            eprintln!("warning: provider {}: {e}", p.id());
        }
    }
    let verified = match tokio.block_on(rt.registry.inspect(&token)) {
        Ok(v) => std::sync::Arc::new(v),
        Err(e) => {
            let provider = e.provider.map(|i| rt.registry.providers[i].id().to_string());
            let out = serde_json::json!({
                "valid": false,
                "provider": provider,
                "reason": e.refusal.reason(),
                "detail": e.refusal.to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            return Ok(ExitCode::from(1));
        }
    };
    // The proxy's own decision for this token on each route, with every `require.*`
    // condition and `policy:` rule that made it (`pipeline::explain`).
    let method = method.to_ascii_uppercase();
    let routes: Vec<pipeline::Explanation> = rt
        .routes
        .routes
        .iter()
        .filter(|route| target.is_none_or(|(name, _)| route.spec.name == name))
        .map(|route| {
            let at = target.map_or(route.spec.path_prefix.as_str(), |(_, p)| p);
            pipeline::explain(&rt, route, &verified, &method, at, false)
        })
        .collect();
    let out = serde_json::json!({
        "valid": true,
        "provider": rt.registry.providers[verified.provider].id(),
        "expires_in": verified.exp - now_secs(),
        "identity": verified.identity,
        "routes": routes,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

pub use crate::providers::dev_op::{mint_tokens, mint_tokens_for};


fn mint(path: &Path, provider: &str, user: &str, id_token: bool, ttl: Option<&str>, count: u64, distinct_users: bool) -> Result<ExitCode, ExitCode> {
    let config = load(path)?;
    let ttl = match ttl {
        None => None,
        Some(t) => Some(humantime::parse_duration(t).map_err(|e| {
            eprintln!("--ttl: {e}");
            ExitCode::from(2)
        })?.as_secs() as i64),
    };
    match mint_tokens_for(&config, provider, user, id_token, ttl, count, distinct_users) {
        Ok(tokens) => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for t in tokens {
                let _ = writeln!(out, "{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("idfabric: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn generate(dir: &Path, force: bool) -> Result<ExitCode, ExitCode> {
    match keys::generate_dev_set(dir, force, false) {
        Ok(written) => {
            for w in written {
                println!("wrote {}", w.display());
            }
            println!("These are DEVELOPMENT keys: never use them in production.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("idfabric: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// `keys hash-secret`: one secret on stdin (a trailing newline is not part of it).
fn hash_secret() -> Result<ExitCode, ExitCode> {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("idfabric: cannot read the secret from stdin");
        return Err(ExitCode::from(1));
    }
    let secret = input.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&input);
    if secret.len() < 8 {
        eprintln!("idfabric: the secret must be at least 8 characters");
        return Err(ExitCode::from(1));
    }
    match crate::broker::hash_secret(secret) {
        Ok(phc) => {
            println!("{phc}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("idfabric: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn rotate(config: &Path, key: Option<PathBuf>, alg: SigningAlg) -> Result<ExitCode, ExitCode> {
    let key = match key {
        Some(k) => k,
        None => match load(config)?.broker {
            Some(b) => b.signing_key,
            None => {
                eprintln!("idfabric: {} has no `broker:` section; pass --key PATH", config.display());
                return Err(ExitCode::from(1));
            }
        },
    };
    let kind = match alg {
        SigningAlg::Es256 => keys::KeyKind::Es256,
        SigningAlg::Rs256 => keys::KeyKind::Rsa2048,
        SigningAlg::Eddsa => keys::KeyKind::Ed25519,
    };
    match keys::rotate(&key, kind, now_secs()) {
        Ok(r) => {
            println!("new signing key {} ({}) written to {}", r.new_kid, r.new_alg, key.display());
            if let Some((kid, path)) = &r.retired {
                let hours = keys::RETIRED_KEY_OVERLAP.as_secs() / 3600;
                println!("old key {kid} kept as {} and published in /jwks for {hours} h", path.display());
            }
            for p in &r.pruned {
                println!("deleted expired retired key {}", p.display());
            }
            println!("running gateways pick the new key up on reload (file watch or SIGHUP)");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("idfabric: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn demo(path: &Path) -> Result<ExitCode, ExitCode> {
    init_tracing();
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Err(e) = keys::generate_dev_set(&base.join("certs"), false, true) {
        eprintln!("idfabric: {e}");
        return Err(ExitCode::from(1));
    }
    let config = load(path)?;
    let mut echo: Vec<std::net::SocketAddr> = config
        .routes
        .iter()
        .flat_map(|r| {
            let mut v: Vec<_> = r.upstreams.iter().filter_map(|u| u.addr()).collect();
            for t in r.by_population.iter().flatten().flatten() {
                v.extend(t.upstreams.iter().filter_map(|u| u.addr()));
            }
            v
        })
        .filter(|a| a.ip().is_loopback())
        .collect();
    echo.sort();
    echo.dedup();
    print_demo(&config);
    server::run(config, server::RunOptions { echo, upgrade: false, ..Default::default() }).map_err(|e| {
        eprintln!("idfabric: {e}");
        ExitCode::from(1)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_demo(config: &Config) {
    let http = config.listen_http.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut out = String::new();
    out.push_str("\n=== idfabric demo ===========================================================\n");
    out.push_str(&format!("proxy:  http://{http}"));
    if let Some(t) = &config.listen_https {
        out.push_str(&format!("   https://{}", t.addr));
    }
    if let Some(a) = config.admin {
        out.push_str(&format!("\nadmin:  http://{a}/metrics  /healthz  /readyz"));
        out.push_str(&admin_instructions(config, a));
    }
    out.push_str("\nupstreams are built-in echo apps: they answer with the headers they received.\n");
    if let Some(b) = &config.broker {
        out.push_str(&format!(
            "\nbroker (idfabric as an OpenID Provider for your apps, docs/broker.md):\n  discovery: {}/.well-known/openid-configuration\n",
            b.issuer
        ));
        for c in &b.clients {
            let how = if c.grant_types.iter().any(|g| g == "client_credentials") {
                "service client (client credentials)"
            } else if c.public {
                "public client (PKCE, no secret)"
            } else {
                "confidential client (code + PKCE)"
            };
            out.push_str(&format!("  client {}: {how}\n", c.client_id));
        }
    }
    for p in &config.providers {
        if let Some(d) = dev_section(p) {
            out.push_str(&format!(
                "\ndev provider {} ({} population, {}-shaped tokens), users: {}\n",
                p.id,
                p.population,
                d.shape.as_str(),
                d.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out.push_str("\nFresh tokens (paste these lines into your shell; mint more with `idfabric token mint`):\n");
    // Expectations come from the same verification and policy code the gateway runs.
    let judge = Runtime::build(config.clone()).ok().and_then(|rt| {
        for p in &rt.registry.providers {
            if p.dev_signer.is_some() {
                p.install_dev_keys();
            }
        }
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some((rt, tokio))
    });
    let mut users: Vec<(String, &crate::config::ProviderSpec, &crate::providers::dev::DevUserSpec, String)> = Vec::new();
    for p in &config.providers {
        let Some(d) = dev_section(p) else { continue };
        for u in d.users.iter().take(2) {
            let Ok(tokens) = mint_tokens(config, &p.id, &u.name, false, None, 1) else { continue };
            let var = format!("{}_TOKEN", u.name.to_ascii_uppercase().replace(['-', '.'], "_"));
            out.push_str(&format!("export {var}='{}'   # {} @ {} ({})\n", tokens[0], u.name, p.id, p.population));
            users.push((var, p, u, tokens[0].clone()));
        }
    }
    out.push_str("\nThen try:\n");
    for (var, p, u, token) in &users {
        for r in &config.routes {
            if r.auth == crate::config::AuthMode::None {
                continue;
            }
            let host = match &r.host {
                crate::config::HostMatch::Exact(h) => h.clone(),
                _ => continue,
            };
            let expect = match &judge {
                Some((rt, tokio)) => expectation(rt, tokio, &r.name, token),
                None => "a decision (the configuration could not be compiled to predict it)".into(),
            };
            out.push_str(&format!(
                "\n# {} ({}) -> route {}: expect {}\ncurl -s -H 'Host: {}' -H \"Authorization: Bearer ${}\" http://{}{}\n",
                u.name, p.id, r.name, expect, host, var, http, r.path_prefix
            ));
        }
    }
    for r in &config.routes {
        if r.auth == crate::config::AuthMode::None {
            out.push_str(&format!("\n# public route {} (no token needed): expect 200\ncurl -s http://{}{}demo\n", r.name, http, r.path_prefix));
        }
    }
    out.push_str("\n=============================================================================\n");
    println!("{out}");
}

/// How to call the guarded admin paths: the token is named by where it lives (file or
/// variable), never printed.
fn admin_instructions(config: &Config, listen: std::net::SocketAddr) -> String {
    let g = &config.admin_guard;
    let ops = g.ops_listen.unwrap_or(listen);
    let bearer = match (&g.token, &g.token_file) {
        (None, _) => {
            return "\n        /providers /access /sessions/revoke are closed: set admin.token_file or admin.token (docs/operations.md)".into()
        }
        (Some(_), Some(f)) => format!("$(cat {})", f.display()),
        (Some(_), None) => "$IDFABRIC_ADMIN_TOKEN".into(),
    };
    format!(
        "\n        operator paths take the admin token:\n        curl -s -H \"Authorization: Bearer {bearer}\" http://{ops}/providers\n        \
         curl -s -H \"Authorization: Bearer {bearer}\" 'http://{ops}/access?since=1d'"
    )
}

/// What the demo user's token gets on route `name`: verified and decided by the same
/// code as a real request (`curl` sends no `Accept: text/html`, so no login redirect).
fn expectation(rt: &Runtime, tokio: &tokio::runtime::Runtime, name: &str, token: &str) -> String {
    use crate::refusal::Refusal;
    let refused = |r: &Refusal| format!("{} {}", r.status(), r.reason());
    let Some(route) = rt.routes.routes.iter().find(|r| r.spec.name == name) else {
        return refused(&Refusal::NoRoute);
    };
    if route.spec.auth == crate::config::AuthMode::Session {
        return refused(&Refusal::BadSession);
    }
    let verified = match tokio.block_on(rt.registry.inspect(token)) {
        Ok(v) => std::sync::Arc::new(v),
        Err(e) => return refused(&e.refusal),
    };
    let req = crate::policy::Request::now("GET", &route.spec.path_prefix);
    match pipeline::admit_bearer(rt, route, verified, &req) {
        Ok(_) => "200 with X-Identity-* headers from the echo app".into(),
        Err(d) => refused(&d.refusal),
    }
}
