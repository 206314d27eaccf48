//! `routes.yaml` and one provider file through the whole config loader. The input is
//! split at its first NUL byte: routes before it, the provider file `p` after it.
//! Seed with the repository's own files, e.g.
//! `printf '%s\0%s' "$(cat ../routes.yaml)" "$(cat ../providers/dev-workforce.yaml)" > corpus/fuzz_config/seed`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (routes, provider) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    idfabric::fuzzing::config(routes, provider);
});
