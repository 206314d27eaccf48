//! Forwarding header lines from a trusted proxy (the first byte of a line picks
//! `X-Forwarded-For/Proto/Host/Port` or `Forwarded`) → the client's origin.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    idfabric::fuzzing::forwarded(data);
});
