//! Request-path canonicalisation (what routing sees): must never panic, and what it
//! returns must be a fixed point (canonicalising a canonical path changes nothing).
//!
//! Written against `idfabric::canon::canonicalise(&str)`; if that function's
//! signature differs (e.g. it returns a `Result` or takes the raw target), adapt the
//! two calls below.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(canonical) = idfabric::canon::canonicalise(path) {
        let again = idfabric::canon::canonicalise(&canonical);
        assert_eq!(again.as_deref().ok(), Some(canonical.as_ref()), "canonicalise is not idempotent");
    }
});
