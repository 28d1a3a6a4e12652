"""The PostgreSQL store from Python: two ``Atrion`` instances (two nodes) on one private
PostgreSQL share scar tissue, so that a route failing on one is shed by the other.

The server is the test's own: ``initdb`` into a temporary folder and ``pg_ctl`` on a free
loopback port (as the ``postgres`` user when run as root, which PostgreSQL refuses to run
as), stopped at the end. Without PostgreSQL it fails, unless ATRION_SKIP_SERVICES=1 is set,
and then says why it skips.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from atrion import Atrion

from conftest import FAST, eventually, free_port, listening


def find(name: str) -> Optional[str]:
    """A PostgreSQL program: on PATH, or where Debian keeps the server's programs."""
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


def as_postgres(args: List[str]) -> List[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = find("initdb"), find("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("ATRION_SKIP_SERVICES") == "1":
            pytest.skip("PostgreSQL (initdb, pg_ctl) not found and ATRION_SKIP_SERVICES=1")
        raise RuntimeError("initdb/pg_ctl not found: install postgresql (scripts/test does) or set ATRION_SKIP_SERVICES=1")
    folder = Path(tempfile.mkdtemp(prefix="atrion-py-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        data, port = folder / "data", free_port()
        run = lambda args: subprocess.run(as_postgres(args), capture_output=True, text=True)  # noqa: E731
        out = run([initdb, "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data)])
        assert out.returncode == 0, f"initdb failed: {out.stderr}"
        opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
        out = run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "-t", "60", "start"])
        assert out.returncode == 0, f"pg_ctl start failed: {out.stderr}"
        try:
            eventually(f"PostgreSQL listens on {port}", lambda: listening(port))
            yield f"postgres://postgres@127.0.0.1:{port}/postgres"
        finally:
            run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_two_nodes_share_scar_tissue_through_postgres(postgres_url: str) -> None:
    route = "GET /pay"
    one = Atrion(store=postgres_url, namespace="py-pg", node_id="one", pulse=0.1, config=FAST)
    two = Atrion(store=postgres_url, namespace="py-pg", node_id="two", pulse=0.1, config=FAST)
    try:
        for a in (one, two):
            for _ in range(12):
                a.report(route, 5, True)
        assert two.decide(route).admitted

        def two_sheds() -> object:
            for _ in range(5):
                one.report(route, 5, False)
            d = two.decide(route)
            return d if not d.admitted else None

        shed = eventually("node two sheds the route that fails on node one", two_sheds, every=0.02)
        assert shed.retry_after is not None and shed.retry_after > 0, shed
        assert shed.reason in ("overloaded", "open", "soft_limit"), shed
    finally:
        one.close()
        two.close()
