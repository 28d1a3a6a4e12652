"""A Python process and an ``atrion serve`` sidecar on one Redis share scar tissue: a route
that fails in the Python process is shed by the sidecar, which never saw it fail.

It starts its own ``redis-server`` on a free loopback port and the workspace's ``atrion``
binary (ATRION_BIN, else target/{debug,release}/atrion under CARGO_TARGET_DIR or the
workspace; scripts/test.sh builds it). Without redis-server it fails, unless
ATRION_SKIP_SERVICES=1 is set, and then says why it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Iterator, List

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
    def __init__(self, args: List[str]) -> None:
        self.log = tempfile.TemporaryFile()
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)

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
    try:
        api = f"http://127.0.0.1:{api_port}"
        eventually(f"the sidecar answers ({sidecar.tail()})", lambda: request(f"{api}/healthz").status == 200)
        route = "GET /pay"
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
        finally:
            py.close()
    finally:
        sidecar.stop()
