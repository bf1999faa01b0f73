#!/usr/bin/env bash
# The main job until the devnet lands: a fresh node home, a file and a tree stored, read back and compared.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
huds="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/huds"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
home="$work/home"
"$huds" --data "$home" init
head -c $((20 * 1024 * 1024 + 12345)) /dev/urandom > "$work/file.bin"
mkdir -p "$work/tree/sub/empty" && echo "hello huds" > "$work/tree/sub/hello.txt" && : > "$work/tree/empty.txt"
echo "== huds add (a 20 MiB file: 256 KiB chunks, 4 MiB segments, sealed, RS 4+2)"
cap="$("$huds" --data "$home" --json add "$work/file.bin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cap"])')"
echo "capability: $cap"
echo "== huds get"
"$huds" --data "$home" get "$cap" -o "$work/back.bin"
cmp "$work/file.bin" "$work/back.bin" && echo "identical bytes"
echo "== huds add --public (a tree) and huds ls by CID"
cid="$("$huds" --data "$home" --json add --public "$work/tree" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cid"])')"
"$huds" --data "$home" ls "$cid"
"$huds" --data "$home" cat "$cid/sub/hello.txt"
