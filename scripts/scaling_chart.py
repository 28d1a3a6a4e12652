#!/usr/bin/env python3
"""Draws docs/charts/scaling.svg from `vfleet --json` files: against the number of nodes (log
scale), the convergence p99 in pulses, and the fleet's store operations and the notices the
store delivers per pulse (log scale). One line per file, labelled by its name.

    target/release/vfleet --nodes 10,100,300,1000 --routes 1000 --dirty 0.01 --pulses 20 \
        --seed 1 --node-ttl 3 --json /tmp/after.json
    python3 scripts/scaling_chart.py docs/charts/scaling.svg "now=/tmp/after.json" "before=/tmp/before.json"

Standard library only: the SVG is written by hand.
"""

import json
import math
import sys

W, H = 940, 330
PANEL_W, PANEL_H = 250, 210
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def log_scale(lo, hi, size):
    a, b = math.log10(lo), math.log10(hi)
    return lambda v: (math.log10(v) - a) / (b - a) * size


def lin_scale(lo, hi, size):
    return lambda v: (v - lo) / (hi - lo) * size


def panel(out, x0, y0, title, series, ylog, ymin, ymax, nmin, nmax):
    sx = log_scale(nmin, nmax, PANEL_W)
    sy = (log_scale if ylog else lin_scale)(ymin, ymax, PANEL_H)
    out.append(f'<g transform="translate({x0},{y0})">')
    out.append(f'<text x="{PANEL_W / 2}" y="-12" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="0" y="0" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    n = nmin
    while n <= nmax:
        x = sx(n)
        out.append(f'<line x1="{x:.1f}" y1="{PANEL_H}" x2="{x:.1f}" y2="{PANEL_H + 4}" stroke="#999"/>')
        out.append(f'<text x="{x:.1f}" y="{PANEL_H + 16}" text-anchor="middle" font-size="11">{n}</text>')
        n *= 10
    ticks = [10 ** e for e in range(int(math.log10(ymin)), int(math.log10(ymax)) + 1)] if ylog else \
        [ymin + (ymax - ymin) * i / 6 for i in range(7)]
    for t in ticks:
        if t < ymin or t > ymax:
            continue
        y = PANEL_H - sy(t)
        label = f"{t:g}" if ylog else f"{t:.1f}"
        out.append(f'<line x1="-4" y1="{y:.1f}" x2="{PANEL_W}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="-6" y="{y + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    out.append(f'<text x="{PANEL_W / 2}" y="{PANEL_H + 32}" text-anchor="middle" font-size="11">nodes</text>')
    for i, (name, points, dashed) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        pts = " ".join(f"{sx(n):.1f},{PANEL_H - sy(v):.1f}" for n, v in points if v > 0 or not ylog)
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for n, v in points:
            if v > 0 or not ylog:
                out.append(f'<circle cx="{sx(n):.1f}" cy="{PANEL_H - sy(v):.1f}" r="3" fill="{color}"/>')
    out.append("</g>")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs = []
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        rows = sorted(json.load(open(path)), key=lambda r: r["nodes"])
        runs.append((name, rows))
    nodes = [r["nodes"] for _, rows in runs for r in rows]
    nmin, nmax = 10 ** math.floor(math.log10(min(nodes))), 10 ** math.ceil(math.log10(max(nodes)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    conv = [(name, [(r["nodes"], r["converge_p99"]) for r in rows], False) for name, rows in runs]
    panel(out, 50, 40, "convergence p99 (pulses)", conv, False, 0.0, 3.0, nmin, nmax)
    # The target at 100 nodes: two pulses.
    y2 = 40 + PANEL_H - PANEL_H * 2.0 / 3.0
    out.append(f'<line x1="50" y1="{y2:.1f}" x2="{50 + PANEL_W}" y2="{y2:.1f}" stroke="#888" stroke-dasharray="4,4"/>')
    ops = [(f"{name}", [(r["nodes"], r["total_ops"]) for r in rows], False) for name, rows in runs]
    values = [v for _, pts, _ in ops for _, v in pts if v > 0]
    panel(out, 350, 40, "store operations per pulse (fleet)", ops, True,
          10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values))), nmin, nmax)
    deliveries = [(f"{name}", [(r["nodes"], r["deliveries"]) for r in rows], False) for name, rows in runs]
    values = [v for _, pts, _ in deliveries for _, v in pts if v > 0]
    panel(out, 640, 40, "notices delivered per pulse", deliveries, True,
          10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values))), nmin, nmax)
    x = 60
    for i, (name, _) in enumerate(runs):
        y = H - 30
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" stroke="{COLORS[i % len(COLORS)]}" stroke-width="2"/>')
        out.append(f'<text x="{x + 30}" y="{y + 4}">{name}</text>')
        x += 60 + 7 * len(name)
    out.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
