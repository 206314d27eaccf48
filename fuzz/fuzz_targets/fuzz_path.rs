//! Request-path canonicalisation (what routing sees): must never panic on any bytes,
//! and what it returns must be a fixed point (canonicalising a canonical path again
//! yields the same path), or routing and the upstream could disagree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(canonical) = idfabric::canon::canonicalize_bytes(data) else { return };
    let again = idfabric::canon::canonicalize(canonical.path());
    assert_eq!(again.as_ref().map(|p| p.path()).ok(), Some(canonical.path()), "canonicalize is not idempotent");
});
