//! The lab parser: a lab file's text through conversion and every semantic
//! check. Any input must give a lab or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Relative SSH key paths resolve under a directory that does not exist.
        let path = std::path::Path::new("/nonexistent/imgbuild-fuzz/lab.yaml");
        let _ = imgbuild::model::lab::from_text(path, text);
    }
});
