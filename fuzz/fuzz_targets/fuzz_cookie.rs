//! `Cookie` headers (one per input line) → session-cookie extraction and the removal
//! of idfabric's own cookies before the upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    idfabric::fuzzing::cookie(data);
});
