//! Every integration test in one binary.
//!
//! Each file under `tests/` is a module of this crate instead of a test binary of its
//! own. One binary links Pingora and the test dependencies once instead of two dozen
//! times: the cold build is minutes faster and its `target/` several gigabytes smaller
//! (CI once ran out of disk while linking the separate binaries). Tests of different
//! files now share the test harness's threads, which also lets the slow ones (code
//! expiry waits, browser sign-ins) overlap.
//!
//! Run one file's tests with a filter: `cargo test --test integration gateway::`.

mod common;

mod access;
mod adaptive_mfa;
mod admin;
mod architecture;
mod audit;
mod broker;
mod broker_backchannel;
mod broker_openidconnect;
mod browser;
mod cli;
mod conformance;
mod continuous_access;
mod ssf;
mod scim;
mod demo;
mod deploy;
mod faults;
mod forward_auth_proxies;
mod gateway;
mod interop;
mod keys_rotate;
mod kinds;
#[cfg(feature = "otlp")]
mod otlp;
mod policy_language;
mod redis_managed;
mod reload;
mod replicas;
mod security_paths;
mod security_signin;
mod session_endpoint;
mod signin;
mod signin_ciam;
mod journeys;
mod smoke;
mod subdomains;
mod trusted_proxies;
mod upgrade;
mod upstreams;
mod watch;

/// Every `tests/*.rs` file is a module above: with `autotests = false` a file left out
/// would silently never compile or run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let this = include_str!("integration.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().is_some_and(|e| e == "rs") && stem != "integration" && !this.contains(&format!("\nmod {stem};"))
        {
            missing.push(stem.to_string());
        }
    }
    assert!(missing.is_empty(), "tests/{{{}}}.rs: add `mod …;` to tests/integration.rs", missing.join(","));
}
