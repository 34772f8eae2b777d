//! The agent's ISO 9660 reader (the NoCloud `cidata` volume): label and the
//! seed file, from any bytes.
#![no_main]

use std::io::Cursor;

use imgbuild_seed::iso9660;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    let _ = iso9660::volume_label(&mut r);
    let _ = iso9660::read_file(&mut r, "imgbuild/seed.yaml");
    let _ = iso9660::read_file(&mut r, "meta-data");
});
