#!/usr/bin/env bash
# Builds the Python package into a fresh virtual environment and runs its tests.
#
#   bindings/python/scripts/test.sh            debug build of the extension (quicker to build)
#   bindings/python/scripts/test.sh --release  release build (what `pip install` makes)
#
# Needs python3 (>= 3.9) with venv and pip. The venv lives under the cargo target directory
# (never in git); the test dependencies are pinned in requirements-test.txt. The cluster
# test needs redis-server and the `atrion` binary, which this script builds
# (cargo build -p atrion-cli) unless ATRION_BIN names one already (CI: the binary that
# `cargo test --workspace` built, which saves building it again with other features);
# without redis-server it fails unless ATRION_SKIP_SERVICES=1.
#
# ATRION_PYTHON_NATIVE, when set, names an extension module already built (scripts/test
# passes the one `cargo test --workspace` made, target/debug/deps/lib_native.so): it and the
# package's Python half are installed into the venv as maturin would lay them out, instead
# of building the crate again with another feature set (minutes on a cold machine).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
profile="${1:---debug}"
command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
jobs="${CARGO_BUILD_JOBS:-2}"
venv="${ATRION_PYTHON_VENV:-$CARGO_TARGET_DIR/python-venv}"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-test.txt"
export VIRTUAL_ENV="$venv"
if [[ "$profile" == "--release" ]]; then
  "$venv/bin/maturin" develop --quiet --release --manifest-path "$here/Cargo.toml" -j "$jobs"
  if [[ -z "${ATRION_BIN:-}" ]]; then
    (cd "$root" && cargo build -p atrion-cli --release -j "$jobs")
    export ATRION_BIN="$CARGO_TARGET_DIR/release/atrion"
  fi
else
  if [[ -n "${ATRION_PYTHON_NATIVE:-}" ]]; then
    [[ -f "$ATRION_PYTHON_NATIVE" ]] || { echo "ATRION_PYTHON_NATIVE=$ATRION_PYTHON_NATIVE: no such file" >&2; exit 1; }
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -rf "$site/atrion"
    cp -r "$here/python/atrion" "$site/atrion"
    cp "$ATRION_PYTHON_NATIVE" "$site/atrion/_native.abi3.so"
  else
    "$venv/bin/maturin" develop --quiet --manifest-path "$here/Cargo.toml" -j "$jobs"
  fi
  if [[ -z "${ATRION_BIN:-}" ]]; then
    (cd "$root" && cargo build -p atrion-cli -j "$jobs")
    export ATRION_BIN="$CARGO_TARGET_DIR/debug/atrion"
  fi
fi
cd "$here"
# The stubs and the package type-check, and so does code written against them (strict).
"$venv/bin/python" -m mypy --strict python/atrion tests/typecheck_usage.py
"$venv/bin/python" -m pytest -q tests
