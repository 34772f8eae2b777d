//! The LXC bake's stream transform: any decompressed base tar plus a small
//! payload (a seed directory, files, a symlink) gives a template or an error,
//! never a panic.
//!
//! Header checksums are recomputed before the transform sees the bytes
//! (walking headers by their size field), so mutations reach the parsing
//! behind the checksum instead of dying on it; a corrupt checksum is covered
//! by the unit tests.
#![no_main]

use std::sync::OnceLock;

use imgbuild::payload::{Node, Tree};
use libfuzzer_sys::fuzz_target;

mod tar_common;

fn payload() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = Tree::new();
        let mut add = |p: &str, n: Node| t.insert(p, n).unwrap();
        add("/etc/imgbuild", Node::dir(0o700));
        add(
            "/etc/imgbuild/seed.yaml",
            Node::bytes(&b"version: 1\n"[..], 0o600),
        );
        add("/opt/x", Node::dir(0o755));
        add("/opt/x/bin", Node::dir(0o755));
        add("/opt/x/bin/run", Node::bytes(&b"#!/bin/sh\n"[..], 0o755));
        add("/opt/x/run", Node::symlink("bin/run"));
        add(
            "/usr/local/bin/firstboot",
            Node::bytes(&b"\x7fELF"[..], 0o755),
        );
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    tar_common::fix_checksums(&mut tar);
    let _ = imgbuild::bake::lxc::transform_bytes(&tar, payload());
});
