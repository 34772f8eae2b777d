//! The seed parser as the agent reads it: bytes, UTF-8, `Seed::from_yaml`.
//! A seed that parses must have a canonical form that parses back to the
//! same canonical form (the instance id depends on it).
#![no_main]

use imgbuild_seed::Seed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(seed) = Seed::from_yaml(text) {
        let canonical = seed.to_yaml();
        let again = Seed::from_yaml(&canonical)
            .unwrap_or_else(|e| panic!("canonical form does not parse: {e}\n{canonical}"));
        assert_eq!(again.to_yaml(), canonical, "canonical form is not stable");
    }
});
