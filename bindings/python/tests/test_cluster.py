"""A Python process, a Rust service (``atrion node``: the facade in a Rust process, sending
healthy traffic on the route) and an ``atrion serve`` sidecar on one Redis share scar tissue:
a route that fails in the Python process is shed by the sidecar, which never saw it fail,
and the Rust service sees the cluster's scar on it.

It starts its own ``redis-server`` on a free loopback port and the workspace's ``atrion``
binary (ATRION_BIN, else target/{debug,release}/atrion under CARGO_TARGET_DIR or the
workspace; scripts/test.sh builds it). Without redis-server it fails, unless
ATRION_SKIP_SERVICES=1 is set, and then says why it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from atrion import Atrion

from conftest import FAST, eventually, free_port, listening
from http_client import request

ROOT = Path(__file__).resolve().parents[3]


def atrion_bin() -> str:
    if os.environ.get("ATRION_BIN"):
        return os.environ["ATRION_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    found = [p for p in (target / "debug" / "atrion", target / "release" / "atrion") if p.exists()]
    if not found:
        raise RuntimeError(f"no atrion binary under {target}: build it (cargo build -p atrion-cli) or set ATRION_BIN")
    return str(max(found, key=lambda p: p.stat().st_mtime))


class Proc:
    """A child process; its standard error kept for failure messages, and, if asked, its
    standard output read as JSON lines in a thread."""

    def __init__(self, args: List[str], json_lines: bool = False) -> None:
        self.log = tempfile.TemporaryFile()
        self.lines: List[Dict[str, Any]] = []
        out = subprocess.PIPE if json_lines else subprocess.DEVNULL
        self.p = subprocess.Popen(args, stdout=out, stderr=self.log, text=json_lines)
        if json_lines:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(json.loads(line))

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")

    def stop(self) -> None:
        self.p.kill()
        self.p.wait(timeout=30)


@pytest.fixture
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        if os.environ.get("ATRION_SKIP_SERVICES") == "1":
            pytest.skip("redis-server not found and ATRION_SKIP_SERVICES=1")
        raise RuntimeError("redis-server not found on PATH: install it (scripts/test does) or set ATRION_SKIP_SERVICES=1")
    port = free_port()
    redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    try:
        eventually(f"redis-server listens on {port}", lambda: listening(port) or (redis.p.poll() is None and None))
        yield f"redis://127.0.0.1:{port}"
    finally:
        redis.stop()


def test_a_failure_seen_by_python_is_shed_by_the_sidecar_through_redis(redis_url: str) -> None:
    api_port = free_port()
    sidecar = Proc(
        [
            atrion_bin(), "serve", "--store", redis_url, "--namespace", "py-cluster", "--node-id", "sidecar",
            "--listen", f"127.0.0.1:{api_port}", "--no-dashboard", "--log-format", "text",
        ]
    )  # fmt: skip
    route = "GET /pay"
    # The Rust service: healthy traffic on the same route, its view printed every 100 ms.
    rust = Proc(
        [
            atrion_bin(), "node", "--store", redis_url, "--namespace", "py-cluster", "--node-id", "rust",
            "--route", route, "--rate", "50", "--duration", "600", "--pulse-ms", "100",
        ],
        json_lines=True,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{api_port}"
        eventually(f"the sidecar answers ({sidecar.tail()})", lambda: request(f"{api}/healthz").status == 200)
        eventually(f"the Rust service runs ({rust.tail()})", lambda: len(rust.lines) > 0)
        assert not (rust.lines[-1]["cluster_scar"] or 0.0) > 0, rust.lines[-1]
        for _ in range(12):
            r = request(f"{api}/v1/report", "POST", {"route": route, "latency_ms": 5, "ok": True})
            assert r.status == 200, r.body
        assert request(f"{api}/v1/decide", "POST", {"route": route}).json()["verdict"] == "admit"

        py = Atrion(store=redis_url, namespace="py-cluster", node_id="python", pulse=0.1, config=FAST)
        try:
            assert py.node_id == "python"
            for _ in range(12):
                py.report(route, 5, True)

            def sidecar_sheds() -> object:
                for _ in range(5):
                    py.report(route, 5, False)
                d = request(f"{api}/v1/decide", "POST", {"route": route}).json()
                return d if d["verdict"] == "shed" else None

            shed = eventually("the sidecar sheds the route that fails in Python", sidecar_sheds, every=0.02)
            assert shed["reason"] in ("overloaded", "open", "soft_limit"), shed
            assert shed["retry_after_ms"] >= 1
            view = request(f"{api}/v1/routes/{urllib.parse.quote(route, safe='')}").json()
            assert view["cluster_scar"] > 0, view
            assert "python" in str(view["nodes"]), view["nodes"]

            # The Rust service, whose own traffic is healthy, holds the cluster's scar too.
            def rust_sees_the_scar() -> object:
                last = rust.lines[-1]
                return last if (last["cluster_scar"] or 0.0) > 0 else None

            seen = eventually(f"the Rust service sees the scar ({rust.tail()})", rust_sees_the_scar)
            assert seen["local_scar"] == 0.0, seen
        finally:
            py.close()
    finally:
        sidecar.stop()
        rust.stop()
