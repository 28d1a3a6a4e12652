#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench -p atrion-bench` run as a Markdown table.

    cargo bench -p atrion-bench && python3 crates/atrion-bench/table.py
"""
import json
import pathlib


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


root = pathlib.Path(__file__).resolve().parents[2] / "target" / "criterion"
print("| group | benchmark | median | 95% interval |")
print("|---|---|---|---|")
for est in sorted(root.glob("**/new/estimates.json")):
    bench = est.parent.parent.relative_to(root)
    group, name = bench.parts[0], "/".join(bench.parts[1:])
    m = json.loads(est.read_text())["median"]
    ci = m["confidence_interval"]
    print(f"| {group} | {name} | {fmt(m['point_estimate'])} | {fmt(ci['lower_bound'])} – {fmt(ci['upper_bound'])} |")
