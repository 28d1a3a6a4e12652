#!/usr/bin/env bash
# Instructions per hot-path operation, Atrion beside governor and failsafe, counted by
# valgrind's callgrind: a figure that does not move with the machine's load, the
# deterministic companion of `cargo bench -p atrion-bench --bench engine`.
#
#   crates/atrion-bench/scripts/instructions.sh [N]      # N operations a run (100000)
#   OPS_BIN=/path/to/ops crates/atrion-bench/scripts/instructions.sh [N]   # a binary built before
#
# Each operation runs twice, 0 and N times; the difference over N is its cost. Needs
# valgrind (Debian package valgrind). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../../.."
n="${1:-100000}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
if [ -n "${OPS_BIN:-}" ]; then
    bin="$OPS_BIN"
else
    cargo build --release --quiet -p atrion-bench --bin ops
    bin="${CARGO_TARGET_DIR:-target}/release/ops"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

count() { # count OP N: instructions of one run
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

ops=(atrion/decide atrion/report atrion/decide_handle atrion/report_handle atrion/decide_report_1ms
    atrion/decide_alternating atrion/decide_report_alternating atrion/facade_decide governor/direct_check failsafe/is_call_permitted failsafe/on_success)
declare -A per
echo "| operation | instructions per call |"
echo "|---|---:|"
for op in "${ops[@]}"; do
    base="$(count "$op" 0)"
    total="$(count "$op" "$n")"
    per[$op]="$(( (total - base) / n ))"
    echo "| \`$op\` | ${per[$op]} |"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "| ratio | |"
echo "|---|---:|"
echo "| \`atrion/decide\` / \`governor/direct_check\` | $(ratio "${per[atrion/decide]}" "${per[governor/direct_check]}") |"
echo "| \`atrion/decide\` / \`failsafe/is_call_permitted\` | $(ratio "${per[atrion/decide]}" "${per[failsafe/is_call_permitted]}") |"
echo "| \`atrion/report_handle\` / \`failsafe/on_success\` | $(ratio "${per[atrion/report_handle]}" "${per[failsafe/on_success]}") |"
echo "| \`atrion/report\` / \`failsafe/on_success\` | $(ratio "${per[atrion/report]}" "${per[failsafe/on_success]}") |"
echo "| \`atrion/facade_decide\` / \`atrion/decide\` | $(ratio "${per[atrion/facade_decide]}" "${per[atrion/decide]}") |"
