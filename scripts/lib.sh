# shellcheck shell=bash
# Shared helpers for imgbuild's test scripts. Source it, do not run it:
#   . "$(dirname "$0")/lib.sh"
#
# Provides:
#   REPO_ROOT          repository root (derived from this file's location)
#   CACHE              test artifact cache (IMGBUILD_TEST_CACHE, else
#                      $XDG_CACHE_HOME/imgbuild-test, else ~/.cache/imgbuild-test)
#   log/warn/die       progress messages on stderr (results go to stdout)
#   apt_install_missing PKG...   apt-get install only the Debian packages that are missing
#   as_root CMD...     run CMD as root (directly, or through sudo)
#   stamp_ok NAME KEY  true when $CACHE/stamps/NAME holds KEY and --force was not given
#   stamp_write NAME KEY
#   inputs_key FILE... sha256 over the given files' contents, for stamps
#   code_key FUNC...   sha256 over the named shell functions' bodies (what a step runs),
#                      so edits to comments or other steps do not invalidate a cache
#   atomic_mv TMP DEST fsync TMP and rename it onto DEST
#   sha256_of FILE / sha512_of FILE
#   elapsed            seconds since the script started (for timing messages)
#   pin_test_images DIR IMGBUILD
#                      the committed recipes in DIR, the LXC base pinned to the test
#                      base, locked against the test mirror (for benches)

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${IMGBUILD_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild-test}"
export REPO_ROOT CACHE

# Set IMGBUILD_FORCE=1 (or pass --force to a script that calls parse_force) to rebuild.
IMGBUILD_FORCE="${IMGBUILD_FORCE:-0}"
_LIB_T0="${_LIB_T0:-$(date +%s)}"
_LIB_NAME="$(basename "${0}")"

log() { printf '[%s %4ss] %s\n' "$_LIB_NAME" "$(( $(date +%s) - _LIB_T0 ))" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "$_LIB_NAME" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$_LIB_NAME" "$*" >&2; exit 1; }
elapsed() { echo $(( $(date +%s) - _LIB_T0 )); }

# parse_force "$@": consumes --force; anything else is an error (exit 2).
parse_force() {
    local a
    for a in "$@"; do
        case "$a" in
            --force) IMGBUILD_FORCE=1 ;;
            -h|--help) echo "usage: $_LIB_NAME [--force]" >&2; exit 0 ;;
            *) echo "$_LIB_NAME: unknown argument: $a (usage: $_LIB_NAME [--force])" >&2; exit 2 ;;
        esac
    done
    export IMGBUILD_FORCE
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

_LIB_APT_UPDATED=0
# apt_install_missing PKG...: install the packages dpkg does not report as installed.
apt_install_missing() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
    log "installing missing packages: ${missing[*]}"
    if [ "$_LIB_APT_UPDATED" = 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        _LIB_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

inputs_key() {
    { [ "$#" -eq 0 ] || sha256sum -- "$@" | awk '{print $1}'; } | sha256sum | awk '{print $1}'
}

code_key() {
    declare -f "$@" | sha256sum | awk '{print $1}'
}

stamp_ok() {
    local name="$1" key="$2"
    [ "$IMGBUILD_FORCE" = 1 ] && return 1
    [ -f "$CACHE/stamps/$name" ] && [ "$(cat "$CACHE/stamps/$name")" = "$key" ]
}

stamp_write() {
    mkdir -p "$CACHE/stamps"
    printf '%s\n' "$2" > "$CACHE/stamps/$1.tmp"
    mv -f "$CACHE/stamps/$1.tmp" "$CACHE/stamps/$1"
}

stamp_clear() { rm -f "$CACHE/stamps/$1"; }

atomic_mv() {
    sync -- "$1" 2>/dev/null || sync
    mv -f -- "$1" "$2"
}

sha256_of() { sha256sum -- "$1" | awk '{print $1}'; }
sha512_of() { sha512sum -- "$1" | awk '{print $1}'; }

# publish_base FILE: link a test base into $CACHE/mirror and write its upstream-style
# checksum file right away (SHA256SUMS "<hex> *<name>" for the cloud image,
# "<name>.sha512" "<hex>  <name>" for the LXC template), so the mirror never serves a
# rebuilt base next to a stale checksum. scripts/mirror calls it too.
publish_base() {
    local f="$1" name key m="$CACHE/mirror"
    name="$(basename "$f")"
    mkdir -p "$m"
    key="$(stat -c '%s %Y %i' "$f")"
    ln -sfn "../bases/$name" "$m/$name"
    case "$name" in
        *.img)
            if ! stamp_ok "mirror-$name" "$key" || [ ! -f "$m/SHA256SUMS" ]; then
                log "mirror: hashing $f"
                printf '%s *%s\n' "$(sha256_of "$f")" "$name" > "$m/SHA256SUMS.tmp"
                mv -f "$m/SHA256SUMS.tmp" "$m/SHA256SUMS"
            fi
            ;;
        *.tar.zst)
            if ! stamp_ok "mirror-$name" "$key" || [ ! -f "$m/$name.sha512" ]; then
                log "mirror: hashing $f"
                printf '%s  %s\n' "$(sha512_of "$f")" "$name" > "$m/$name.sha512.tmp"
                mv -f "$m/$name.sha512.tmp" "$m/$name.sha512"
            fi
            ;;
        *) die "publish_base: unknown base type $name" ;;
    esac
    stamp_write "mirror-$name" "$key"
}

# pin_test_images DIR IMGBUILD: the committed recipes copied into DIR with the
# LXC base pinned to the test base's digest, and locked against the test
# mirror, which stands in for the unreachable upstreams (so its checksum files
# are trusted by name, loudly).
pin_test_images() {
    local dir="$1" ib="$2" digest
    mkdir -p "$dir"
    cp "$REPO_ROOT/images/ubuntu-22.04-vm.yaml" "$dir/"
    digest="$(awk '{print $1}' "$CACHE/mirror/ubuntu-22.04-standard_22.04-1_amd64.tar.zst.sha512")"
    sed "s/sha512:[0-9a-f]\{128\}/sha512:$digest/" "$REPO_ROOT/images/ubuntu-22.04-lxc.yaml" >"$dir/ubuntu-22.04-lxc.yaml"
    "$ib" lock -q --images "$dir" --mirror "$CACHE/mirror" --trust-mirror-checksums >/dev/null
}
