#!/bin/sh
# Builds the static firstboot agent (glibc, +crt-static) into
# target/x86_64-unknown-linux-gnu/release/firstboot without disturbing the
# host build cache (the flags apply to the explicit target only).
set -eu
cd "$(dirname "$0")/.."
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -p firstboot --release --target x86_64-unknown-linux-gnu "$@"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$(pwd)/$target" ;; esac
echo "$target/x86_64-unknown-linux-gnu/release/firstboot"
