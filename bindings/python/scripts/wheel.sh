#!/usr/bin/env bash
# Builds the Python package's wheel with maturin, as `pip install ./bindings/python` does,
# installs it into a fresh venv and checks what was installed: the extension module imports
# and decides, and the type stubs and py.typed marker are in the package. (The behaviour is
# tested by scripts/test.sh; this checks the packaging.)
#
#   bindings/python/scripts/wheel.sh            a debug build (quicker; what CI builds)
#   bindings/python/scripts/wheel.sh --release  a release build (what pip builds)
#
# Needs python3 (>= 3.9) with venv and pip; maturin comes from requirements-test.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
profile=(--profile dev)
[[ "${1:-}" == "--release" ]] && profile=(--release)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "$(grep '^maturin==' "$here/requirements-test.txt")"
"$work/venv/bin/maturin" build --quiet "${profile[@]}" --manifest-path "$here/Cargo.toml" \
  --out "$work/dist" -j "${CARGO_BUILD_JOBS:-2}"
wheel="$(ls "$work"/dist/atrion-*.whl)"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
"$work/venv/bin/python" - <<'PY'
import pathlib

import atrion

package = pathlib.Path(atrion.__file__).parent
for name in ("py.typed", "_native.pyi"):
    assert (package / name).is_file(), f"{name} is not in the installed package"
a = atrion.Atrion()
d = a.decide("GET /wheel")
assert d.admitted, d
a.report("GET /wheel", 5.0, True)
assert "GET /wheel" in a.routes()
a.close()
print(f"the wheel installs and decides: {package}")
PY
echo "built and checked $(basename "$wheel")"
