#!/usr/bin/env bash
# Builds the Node addon and runs every Node test of the package.
#
#   bindings/node/scripts/test.sh            debug build of the addon (quicker to build)
#   bindings/node/scripts/test.sh --release  release build
#
# Needs node (>= 18) and npm; installs the package's dev dependencies from the committed
# package-lock.json (npm ci). The cluster test needs redis-server and the `atrion` binary,
# which this script builds (cargo build -p atrion-cli); without redis-server it fails
# unless ATRION_SKIP_SERVICES=1. The original's own class tests are not run here: they are
# not in the repository (scripts/original-tests.sh runs them from a checkout).
#
# ATRION_NODE_ADDON and ATRION_BIN, when set, name an addon and an `atrion` binary already
# built (scripts/test passes what `cargo test --workspace` made): they are used as they are,
# instead of building the crates again with another feature set (minutes on a cold machine).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
profile="${1:---debug}"
command -v node >/dev/null || { echo "node is not installed: install Node.js 18 or later" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
if [[ -n "${ATRION_NODE_ADDON:-}" ]]; then
  [[ -f "$ATRION_NODE_ADDON" ]] || { echo "ATRION_NODE_ADDON=$ATRION_NODE_ADDON: no such file" >&2; exit 1; }
  cp "$ATRION_NODE_ADDON" "$here/index.node.tmp"
  mv "$here/index.node.tmp" "$here/index.node"
  [[ -n "${ATRION_BIN:-}" ]] || (cd "$root" && cargo build -p atrion-cli -j "${CARGO_BUILD_JOBS:-2}")
  export ATRION_BIN="${ATRION_BIN:-$CARGO_TARGET_DIR/debug/atrion}"
elif [[ "$profile" == "--release" ]]; then
  "$here/scripts/build.sh"
  (cd "$root" && cargo build -p atrion-cli --release -j "${CARGO_BUILD_JOBS:-2}")
  export ATRION_BIN="$CARGO_TARGET_DIR/release/atrion"
else
  "$here/scripts/build.sh" --debug
  (cd "$root" && cargo build -p atrion-cli -j "${CARGO_BUILD_JOBS:-2}")
  export ATRION_BIN="$CARGO_TARGET_DIR/debug/atrion"
fi
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
# The types compile against a user's code (strict).
node_modules/.bin/tsc --noEmit --strict --module nodenext --moduleResolution nodenext \
  --target es2022 --lib es2022,esnext.disposable --types node test/types.ts
node --test test/*.test.js test/*.test.mjs
