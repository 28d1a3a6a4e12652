#!/usr/bin/env bash
# Builds the native addon and copies it to bindings/node/index.node.
#   scripts/build.sh            release build
#   scripts/build.sh --debug    debug build
# CARGO_TARGET_DIR is honoured; CARGO_BUILD_JOBS too (default 2).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
profile=release
flags=(--release)
if [[ "${1:-}" == "--debug" ]]; then profile=debug; flags=(); fi
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build -p atrion-node -j "${CARGO_BUILD_JOBS:-2}" "${flags[@]}")
case "$(uname -s)" in
  Darwin) lib="libatrion_node.dylib" ;;
  MINGW*|MSYS*|CYGWIN*) lib="atrion_node.dll" ;;
  *) lib="libatrion_node.so" ;;
esac
cp "$target/$profile/$lib" "$here/index.node.tmp"
mv "$here/index.node.tmp" "$here/index.node"
echo "built $here/index.node ($profile)"
