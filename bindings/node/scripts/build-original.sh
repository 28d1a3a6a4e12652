#!/usr/bin/env bash
# Builds the original Atrion (its own TypeScript, at 2fccefa) into one ES module, for the
# speed bench to run beside this package. Nothing of it is kept in the repository: the
# sources are copied into a temporary directory and bundled with esbuild (a dependency of
# vitest, already in node_modules) into OUT.
#
#   scripts/build-original.sh ORIGINAL OUT.mjs
#     ORIGINAL: a checkout of cluster-127/atrion, or its git directory (read at
#     $ORIGINAL_COMMIT, 2fccefa)
#
# The original imports its WebAssembly build statically (wasm-pack output, not in the
# repository); route() never calls it, and the bench constructs it with engine: 'ts', so a
# stub stands in for that one module.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:?usage: build-original.sh ORIGINAL OUT.mjs}"
out="${2:?usage: build-original.sh ORIGINAL OUT.mjs}"
commit="${ORIGINAL_COMMIT:-2fccefa}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ -d "$src/src" ]]; then
  cp -r "$src/src" "$tmp/src"
else
  git --git-dir "$src" archive "$commit" src | tar -x -C "$tmp"
fi
mkdir -p "$tmp/atrion-physics/pkg"
echo 'export class PhysicsEngine {}; export class PressureVector {}' >"$tmp/atrion-physics/pkg/atrion_physics.js"
cat >"$tmp/entry.ts" <<'TS'
export { Atrion } from './src/atrion.ts'
export { InMemoryProvider } from './src/core/state/providers/inmemory.ts'
TS
"$here/node_modules/.bin/esbuild" "$tmp/entry.ts" --bundle --platform=node --format=esm \
  --target=node20 --outfile="$out" --log-level=warning
echo "built $out from $commit"
