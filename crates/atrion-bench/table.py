#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench -p atrion-bench` run as a Markdown table.

    cargo bench -p atrion-bench --bench engine && python3 crates/atrion-bench/table.py
"""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parents[2] / "target" / "criterion"
print("| group | benchmark | median | 95% interval |")
print("|---|---|---|---|")
for est in sorted(root.glob("**/new/estimates.json")):
    bench = est.parent.parent.relative_to(root)
    group, name = bench.parts[0], "/".join(bench.parts[1:])
    m = json.loads(est.read_text())["median"]
    ci = m["confidence_interval"]
    print(f"| {group} | {name} | {m['point_estimate']:.1f} ns | {ci['lower_bound']:.1f}–{ci['upper_bound']:.1f} ns |")
