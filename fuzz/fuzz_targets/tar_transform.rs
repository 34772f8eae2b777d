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

fn octal(f: &[u8]) -> u64 {
    f.iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .fold(0u64, |v, &b| {
            v.saturating_mul(8).saturating_add((b - b'0') as u64)
        })
}

fn fix_checksums(tar: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 512 <= tar.len() {
        let block = &mut tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            pos += 512;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&b| b as u64).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let size = if block[124] & 0x80 != 0 {
            0
        } else {
            octal(&block[124..136])
        };
        let data = size.div_ceil(512).saturating_mul(512);
        pos = pos
            .saturating_add(512)
            .saturating_add(data.min(usize::MAX as u64 / 2) as usize);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    fix_checksums(&mut tar);
    let _ = imgbuild::bake::lxc::transform_bytes(&tar, payload());
});
