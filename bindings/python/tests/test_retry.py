"""Retries: ``decide(route, priority, attempt)``, ``guard(..., attempt=)`` and the
``X-Retry-Attempt`` header read by the ASGI and WSGI middlewares decide a retry one
priority tier lower per retry, so that retries are shed before first tries (critical
stays critical)."""

from __future__ import annotations

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import atrion.wsgi
from atrion import RETRY_ATTEMPT_HEADER, Atrion, InvalidInput, Shed, retry_attempt
from atrion.asgi import AtrionMiddleware

from http_client import request
from test_asgi import serve as serve_asgi
from wsgi_server import serve as serve_wsgi

# The low tier sheds nearly anything over R_base while normal admits up to the break point, and no
# keep-alive request slips through during a test.
BETWEEN = {"priority": {"bulk": 0.01, "low": 0.01, "normal": 1, "high": 1}, "keepalive": 3600}


def between(route: str) -> Atrion:
    """An engine whose ``route`` is a little over R_base: a first try at normal is admitted,
    a retry (decided at low) is shed."""
    a = Atrion(config=BETWEEN)
    a.report(route, 5.0, False)  # one failure: resistance a little over R_base, far under the break point
    a.decide(route, "low")  # the keep-alive's one request, if it has one: taken now
    assert a.decide(route, "low").reason == "overloaded"
    assert a.decide(route, "normal").admitted
    return a


def test_the_header_and_its_parsing() -> None:
    assert RETRY_ATTEMPT_HEADER == "x-retry-attempt"
    assert retry_attempt(" 2 ") == 2
    for bad in ["", "two", "-1", "1.5", "99999999999"]:
        assert retry_attempt(bad) == 0, bad


def test_decide_a_retry_a_tier_lower_per_retry() -> None:
    a = between("GET /r")
    try:
        assert not a.decide("GET /r", "normal", 1).admitted
        assert a.decide("GET /r", "normal", 1).reason == "overloaded"
        assert not a.decide("GET /r", "high", 2).admitted  # two tiers lower: low
        assert a.decide("GET /r", "high", 1).admitted  # one tier lower: normal
        assert a.decide("GET /r", "normal", 0).admitted
        assert a.decide("GET /r").admitted
        assert a.decide("GET /r", "critical", 100).admitted
        assert not a.decide("GET /r", "normal", 10**12).admitted  # past the last tier: bulk
        with pytest.raises(InvalidInput, match="attempt"):
            a.decide("GET /r", "normal", -1)
        with pytest.raises(Shed):
            with a.guard("GET /r", "normal", attempt=1):
                pass
        with a.guard("GET /r", "normal"):
            pass
    finally:
        a.close()


def test_asgi_sheds_a_retry_where_its_first_try_is_admitted() -> None:
    a = between("GET /x")
    served = [0]

    async def x(request: Request) -> PlainTextResponse:
        served[0] += 1
        return PlainTextResponse("x")

    app = Starlette(routes=[Route("/x", x)])
    app.add_middleware(AtrionMiddleware, atrion=a)
    server = serve_asgi(app)
    try:
        assert request(f"{server.url}/x", headers={"X-Retry-Attempt": "1"}).status == 503
        assert served[0] == 0
        assert request(f"{server.url}/x", headers={"X-Retry-Attempt": "soon"}).status == 200  # not a number: a first try
        assert request(f"{server.url}/x").status == 200
        assert served[0] == 2
    finally:
        server.stop()
        a.close()


def test_wsgi_sheds_a_retry_where_its_first_try_is_admitted() -> None:
    a = between("GET /x")
    served = [0]
    app = Flask(__name__)
    atrion.wsgi.flask(app, a)

    @app.get("/x")
    def x() -> str:
        served[0] += 1
        return "x"

    server = serve_wsgi(app)
    try:
        assert request(f"{server.url}/x", headers={"X-Retry-Attempt": "2"}).status == 503
        assert served[0] == 0
        assert request(f"{server.url}/x").status == 200
        assert served[0] == 1
    finally:
        server.stop()
        a.close()
