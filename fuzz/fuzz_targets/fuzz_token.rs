//! A bearer token: `Authorization` header → credential extraction → compact JWS
//! split, base64url, JSON, JOSE header rules and time claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    idfabric::fuzzing::token(data);
    idfabric::fuzzing::header_name(data);
});
