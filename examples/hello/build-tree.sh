#!/usr/bin/env bash
# Builds the example handler in release and assembles its runtime tree in OUT: a tree
# that a Lambda zip cannot carry intact, which is what `coldpack pack` is for.
#
#   OUT/libexec/handler-v1          the binary, mode 0755
#   OUT/bin/handler                 -> ../libexec/handler-v1 (the entrypoint)
#   OUT/data-v1/greeting.txt        in a read-only directory (mode 0555)
#   OUT/share                       -> data-v1
#   OUT/etc/greeting                -> ../share/greeting.txt (read by the handler at init)
#   OUT/var/cache/                  empty, and checked by the handler at init
#
# Usage: examples/hello/build-tree.sh OUT
# Honours CARGO_TARGET_DIR and CARGO_BUILD_TARGET (another machine's handler, e.g. an
# aarch64 one for tests/arm64.rs); prints OUT's absolute path when done.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
out=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Rebuilding over an earlier tree is fine; wiping anything else is not.
if [[ -e $out ]]; then
    if [[ ! -e $out/libexec/handler-v1 ]]; then
        echo "$0: $out exists and is not a tree built by this script; refusing to replace it" >&2
        exit 1
    fi
    chmod -R u+w "$out"
    rm -rf "$out"
fi

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p coldpack-example-hello
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir = /* ]] || target_dir=$repo/$target_dir

mkdir -p "$out"/{bin,libexec,data-v1,etc,var/cache}
install -m 0755 "$target_dir/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/handler" "$out/libexec/handler-v1"
ln -s ../libexec/handler-v1 "$out/bin/handler"
printf 'Hello from a coldpacked runtime\n' > "$out/data-v1/greeting.txt"
chmod 0644 "$out/data-v1/greeting.txt"
ln -s data-v1 "$out/share"
ln -s ../share/greeting.txt "$out/etc/greeting"
# Last, or it would block the writes above.
chmod 0555 "$out/data-v1"

cd "$out" && pwd
