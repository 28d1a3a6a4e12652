"""Code written against the stubs, checked with ``mypy --strict`` (not run by pytest)."""

from __future__ import annotations

from typing import Optional

from atrion import Atrion, Decision, Lease, RouteState, Shed
from atrion.asgi import AtrionMiddleware as AsgiMiddleware
from atrion.wsgi import AtrionMiddleware as WsgiMiddleware


def use(a: Atrion) -> float:
    d: Decision = a.decide("GET /x", priority="high")
    admitted: bool = d.admitted
    retry: Optional[float] = d.retry_after
    mode: str = d.mode
    a.report("GET /x", 1.5, ok=admitted, saturation=None)
    try:
        with a.guard("GET /x") as g:
            g.fail()
    except Shed as e:
        retry = e.retry_after
    state: Optional[RouteState] = a.route("GET /x")
    routes: list[str] = a.routes()
    lease: Lease = a.start_task("jobs", profile="heavy", max_duration=10.0, heartbeat=1.0)
    with lease:
        lease.heartbeat()
    n: int = a.active_tasks("jobs") + a.sweep_tasks() + len(routes) + len(mode)
    return (retry or 0.0) + n + (state.resistance if state else 0.0)


async def use_async(a: Atrion) -> None:
    async with a.guard("GET /y"):
        pass


def middleware(a: Atrion) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    AsgiMiddleware(app, a)
    WsgiMiddleware(lambda environ, start: [b""], a)
