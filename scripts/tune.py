#!/usr/bin/env python3
"""Sweep the default model's constants through the wind tunnel and rank them.

Runs `atrion simulate --all --json` once per combination of the values below (each passed
with `--set atrion-default.KEY=VALUE`) and scores each combination:

- criteria: how many scenario criteria `atrion-default` passes (out of all it is named in);
- goodput: the mean, over request-level scenarios, of atrion-default's goodput divided by
  the best goodput of the peers (none, breaker, aimd, gradient2, envoy);
- within 5%: in how many request-level scenarios that goodput is at least 95% of the best;
- worst healthy shed: the largest share shed while healthy, over all scenarios;
- recover: the mean recovery time over the scenarios where it recovers at all;
- flaps: transitions in `threshold-flapping`.

Prints a Markdown table, best first (most criteria, then goodput). Usage:

    cargo build --release -p atrion-cli
    python3 scripts/tune.py                      # the grid below
    python3 scripts/tune.py '{"half_open.open_base": [1, 2]}'   # another grid, as JSON
    python3 scripts/tune.py '{"throttle.patience": [2, 5]}' --seed 3   # every scenario on seed 3
"""
import itertools
import json
import subprocess
import sys

ATRION = "target/release/atrion"
GRID = {
    "throttle.gain": [0.5, 1.0, 2.0],
    "throttle.proportional": [0.25, 0.5, 1.0],
    "throttle.patience": [1.0, 2.0, 4.0],
}
PEERS = ["none", "breaker", "aimd", "gradient2", "envoy"]


SEED = []


def run(values):
    cmd = [ATRION, "simulate", "--all", "--json", "--no-charts", "--no-progress"] + SEED
    for k, v in values.items():
        cmd += ["--set", f"atrion-default.{k}={v}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(out.stderr)
    return json.loads(out.stdout)


def score(reports):
    passed = total = 0
    ratios, recovers, flaps, worst_shed = [], [], None, 0.0
    for r in reports:
        for c in r["checks"]:
            if c["expect"]["controller"] == "atrion-default":
                total += 1
                passed += c["passed"]
        res = {x["controller"]: x["summary"] for x in r["results"]}
        ours = res.get("atrion-default")
        if ours is None or r["scenario"].get("telemetry"):
            continue
        worst_shed = max(worst_shed, ours["healthy_shed"])
        best = max(res[p]["goodput"] for p in PEERS if p in res)
        if best > 0:
            ratios.append(ours["goodput"] / best)
        if ours["recover_s"] is not None:
            recovers.append(ours["recover_s"])
        if r["scenario"]["name"] == "threshold-flapping":
            flaps = ours["transitions"]
    within = sum(1 for x in ratios if x >= 0.95)
    return (
        passed,
        total,
        sum(ratios) / len(ratios),
        f"{within}/{len(ratios)}",
        worst_shed,
        sum(recovers) / max(len(recovers), 1),
        flaps,
    )


def main():
    args = sys.argv[1:]
    if "--seed" in args:
        i = args.index("--seed")
        SEED.extend(["--seed", args[i + 1]])
        del args[i : i + 2]
    grid = json.loads(args[0]) if args else GRID
    keys = list(grid)
    rows = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        rows.append((values, score(run(values))))
    rows.sort(key=lambda r: (-r[1][0], -r[1][2]))
    print(
        "| " + " | ".join(keys) + " | criteria | goodput vs best peer | within 5% | worst healthy shed"
        " | mean recover s | flaps |"
    )
    print("|" + "---|" * (len(keys) + 6))
    for values, (p, t, g, within, shed, rec, fl) in rows:
        cells = [f"{values[k]:g}" for k in keys]
        print(f"| {' | '.join(cells)} | {p}/{t} | {g:.3f} | {within} | {100 * shed:.2f}% | {rec:.1f} | {fl} |")


if __name__ == "__main__":
    main()
