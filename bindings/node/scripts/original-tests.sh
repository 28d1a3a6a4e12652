#!/usr/bin/env bash
# Runs the original Atrion's unit tests of its class (tests/unit/atrion-class.test.ts,
# vitest) against this package, unchanged but for their two imports, which are pointed at
# the package. None of the original's code is kept: it is copied into a temporary
# directory, run there, and removed.
#
#   scripts/original-tests.sh ORIGINAL      a checkout of cluster-127/atrion, or its git
#                                           directory (read at $ORIGINAL_COMMIT, 2fccefa)
# The tests construct `new Atrion(...)` without a model: they run the package's default
# model (test/original-contract.test.js runs the same contract on both models).
# Needs the addon built (scripts/build.sh) and `npm ci` done in bindings/node.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:?usage: original-tests.sh PATH_TO_ORIGINAL_CHECKOUT_OR_GIT_DIR}"
commit="${ORIGINAL_COMMIT:-2fccefa}"
test_path="tests/unit/atrion-class.test.ts"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tests/unit"
if [[ -f "$src/$test_path" ]]; then
  cp "$src/$test_path" "$tmp/$test_path"
else
  git --git-dir "$src" show "$commit:$test_path" >"$tmp/$test_path"
fi
before="$(sha256sum <"$tmp/$test_path" | cut -c1-16)"
# The two imports, and nothing else, point at the package.
sed -i \
  -e "s#from '../../src/atrion.js'#from '$here/index.js'#" \
  -e "s#from '../../src/core/state/providers/inmemory.js'#from '$here/index.js'#" \
  "$tmp/$test_path"
changed="$(diff <(git --git-dir "$src" show "$commit:$test_path" 2>/dev/null || cat "$src/$test_path") "$tmp/$test_path" | grep -c '^>' || true)"
if [[ "$changed" != "2" ]]; then
  echo "original-tests: expected exactly the two imports rewritten, got $changed changed lines" >&2
  exit 1
fi
grep -n "^import" "$tmp/$test_path"
echo "original test file sha256 (before the rewrite): $before…"
ln -s "$here/node_modules" "$tmp/node_modules"
cd "$tmp"
"$here/node_modules/.bin/vitest" run --root "$tmp" --reporter verbose "$test_path"
