//! The payload's archive unpacking (Spark/Java tarballs into `/opt/x`) with
//! its checks of names, hardlinks and symlink chains: any archive gives a tree
//! or an error, never a panic. Staging goes to a fresh directory under
//! /dev/shm (tmpfs) per input.
#![no_main]

use imgbuild::payload::archive::unpack_into_tree;
use libfuzzer_sys::fuzz_target;

mod tar_common;

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    tar_common::fix_checksums(&mut tar);
    let dir = tempfile::Builder::new()
        .prefix("imgbuild-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let archive = dir.path().join("a.tar");
    std::fs::write(&archive, &tar).expect("writing the archive");
    let _ = unpack_into_tree(&archive, "/opt/x", 1, &dir.path().join("staging"));
});
