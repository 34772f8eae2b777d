//! The checksum-file parsers (GNU, BSD `--tag`, gpg `--print-md` blocks, a
//! bare digest), for both algorithms, and the lookup of one file's entry.
#![no_main]

use imgbuild::artifact::DigestAlgo;
use imgbuild::fetch::checksums;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for algo in [DigestAlgo::Sha256, DigestAlgo::Sha512] {
        let entries = checksums::parse(text, algo);
        for e in entries.iter().take(4) {
            if let Some(name) = &e.name {
                let base = name.rsplit('/').next().unwrap_or(name);
                let _ = checksums::find_digest(text, base, algo);
            }
        }
        let _ = checksums::find_digest(text, "minio", algo);
    }
});
