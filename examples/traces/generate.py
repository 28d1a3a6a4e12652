#!/usr/bin/env python3
"""Writes the sample traces in this folder. Deterministic: run it again and get the same bytes.

    python3 examples/traces/generate.py
"""
import json
import math
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def checkout_outage():
    """Two routes at 50 requests/s for 90 s; /checkout fails hard from 30 s to 45 s."""
    rng = random.Random(7)
    rows = []
    for i in range(90 * 50):
        t = i * 20
        for route in ("GET /checkout", "GET /search"):
            down = route == "GET /checkout" and 30_000 <= t < 45_000
            latency = rng.lognormvariate(math.log(1_500 if down else 40), 0.3)
            error = rng.random() < (0.97 if down else 0.005)
            saturation = min(1.0, max(0.0, rng.gauss(0.95 if down else 0.35, 0.03)))
            priority = rng.choices(["critical", "normal", "bulk"], weights=[1, 6, 3])[0]
            rows.append({"timestamp_ms": t + (1 if route == "GET /search" else 0), "route": route,
                         "latency_ms": round(latency, 2), "error": error,
                         "saturation": round(saturation, 3), "priority": priority})
    with open(os.path.join(HERE, "checkout-outage.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def latency_ramp():
    """One route at 100 requests/s for 60 s; latency ramps from 20 ms to 800 ms over 5 s at
    20 s, holds until 40 s, then recovers."""
    rng = random.Random(11)
    with open(os.path.join(HERE, "latency-ramp.csv"), "w") as f:
        f.write("timestamp_ms,route,latency_ms,error,saturation,priority\n")
        for i in range(60 * 100):
            t = i * 10
            s = t / 1000
            base = 20 if s < 20 or s >= 40 else min(800, 20 + (s - 20) * 156)
            latency = rng.lognormvariate(math.log(base), 0.2)
            error = 1 if rng.random() < (0.01 if base < 100 else 0.05) else 0
            saturation = min(1.0, 0.3 + base / 1200)
            priority = "high" if i % 10 == 0 else "normal"
            f.write(f"{t},db,{latency:.2f},{error},{saturation:.3f},{priority}\n")


def flapping():
    """The reference's flapping experiment as a trace: error rate alternating 0.4 / 0.6
    every 100 ms tick, for 100 ticks."""
    with open(os.path.join(HERE, "flapping.csv"), "w") as f:
        f.write("timestamp_ms,route,latency_ms,error,saturation\n")
        for tick in range(100):
            f.write(f"{tick * 100},flaky,50,{0.4 if tick % 2 == 0 else 0.6},0.3\n")


if __name__ == "__main__":
    checkout_outage()
    latency_ramp()
    flapping()
