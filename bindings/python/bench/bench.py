"""Speed figures of the Python package (docs/BENCHMARKS.md):

- ns per call from Python: a bare function call, ``decide``, ``report``, ``decide`` +
  ``report``, a ``with guard`` block (timeit, best of several repeats);
- with ``ATRION_URL`` set (an ``atrion serve`` sidecar), the same guarded call through the
  sidecar with ``examples/clients/python/guard.py`` (decide + report by ticket over HTTP);
- µs per request through a Starlette app called in process (ASGI, no sockets), bare and
  with ``AtrionMiddleware``: the middleware's own cost per request.

    python bindings/python/bench/bench.py
    ATRION_URL=http://127.0.0.1:7878 python bindings/python/bench/bench.py   # and the sidecar
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, List

from atrion import Atrion


def per_call(stmt: Callable[[], Any], number: int = 200_000, repeat: int = 7) -> float:
    """Best ns per call over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9


def calls() -> Dict[str, float]:
    a = Atrion(connect=False)
    route = "GET /users/{id}"
    for _ in range(20):
        a.report(route, 5.0, True)
    decide, report, guard = a.decide, a.report, a.guard

    def bare(r: str, p: None = None) -> None:
        return None

    def both() -> None:
        decide(route)
        report(route, 5.0, True)

    def with_guard() -> None:
        with guard(route):
            pass

    return {
        "bare Python function call": per_call(lambda: bare(route)),
        "decide": per_call(lambda: decide(route)),
        "report": per_call(lambda: report(route, 5.0, True)),
        "decide + report": per_call(both),
        "with guard(route)": per_call(with_guard),
    }


def sidecar(n: int = 2_000) -> Dict[str, float]:
    """The guarded call through the sidecar's example client, if ``ATRION_URL`` is set."""
    if not os.environ.get("ATRION_URL"):
        return {}
    path = Path(__file__).resolve().parents[3] / "examples" / "clients" / "python" / "guard.py"
    spec = importlib.util.spec_from_file_location("atrion_sidecar_guard", path)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    route = "GET /users/{id}"
    for _ in range(100):
        client.guarded(route, lambda: None)
    t = time.perf_counter()
    for _ in range(n):
        client.guarded(route, lambda: None)
    return {"sidecar: decide + report (example client)": (time.perf_counter() - t) / n * 1e9}


def asgi(n: int = 20_000, repeat: int = 5) -> Dict[str, float]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from atrion.asgi import AtrionMiddleware

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    bare = Starlette(routes=[Route("/users/{id}", hello)])
    guarded = Starlette(routes=[Route("/users/{id}", hello)])
    guarded.add_middleware(AtrionMiddleware, atrion=Atrion(connect=False))

    async def run(app: Any) -> float:
        sent: List[Any] = []

        async def receive() -> Dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        def scope(i: int) -> Dict[str, Any]:
            return {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/users/{i % 100}",
                "raw_path": f"/users/{i % 100}".encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"bench")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }

        for i in range(1000):  # warm up (route cache, lazy middleware stack)
            await app(scope(i), receive, send)
        best = float("inf")
        for _ in range(repeat):
            sent.clear()
            t = time.perf_counter()
            for i in range(n):
                await app(scope(i), receive, send)
            best = min(best, (time.perf_counter() - t) / n * 1e6)
            assert sent[0]["status"] == 200
        return best

    return {
        "Starlette app, bare (µs/request)": asyncio.run(run(bare)),
        "Starlette app + AtrionMiddleware (µs/request)": asyncio.run(run(guarded)),
    }


if __name__ == "__main__":
    print(f"Python {platform.python_version()} on {platform.machine()}")
    for k, v in {**calls(), **sidecar()}.items():
        print(f"{k:44} {v:10.0f} ns")
    for k, v in asgi().items():
        print(f"{k:48} {v:8.2f}")
