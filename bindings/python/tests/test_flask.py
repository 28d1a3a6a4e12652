"""The WSGI middleware with Flask, served by a real WSGI server over real HTTP."""

from __future__ import annotations

import http.client
import threading
from typing import Iterator

import pytest
from flask import Flask, Response, abort

import atrion.wsgi
from atrion import Atrion

from conftest import FAST, ThreadServer, eventually
from http_client import request
from wsgi_server import serve


class State:
    def __init__(self) -> None:
        self.failing = False
        self.release = threading.Event()


@pytest.fixture
def flask_app() -> Iterator[tuple[ThreadServer, Atrion, State]]:
    a = Atrion(config=FAST)
    state = State()
    app = Flask(__name__)
    atrion.wsgi.flask(app, a)  # the one line

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        if state.failing:
            abort(500)
        return {"id": user_id}

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[bytes]:
            yield b"first\n"
            state.release.wait(60)
            yield b"last\n"

        return Response(body(), mimetype="text/plain")

    server = serve(app)
    yield server, a, state
    server.stop()
    a.close()


def test_flask_routes_are_named_by_their_rule(flask_app: tuple[ThreadServer, Atrion, State]) -> None:
    server, a, _ = flask_app
    for i in (1, 2):
        assert request(f"{server.url}/users/{i}").json() == {"id": i}
    assert request(f"{server.url}/nope").status == 404
    eventually("two reports on the rule", lambda: (s := a.route("GET /users/<int:user_id>")) and s.updates == 2)
    assert "GET <unmatched>" in a.routes()
    assert request(f"{server.url}/boom").status == 500
    eventually("the exception is a failure", lambda: (s := a.route("GET /boom")) and s.pressure[1] > 0)


def test_flask_sheds_a_failing_route_and_recovers(flask_app: tuple[ThreadServer, Atrion, State]) -> None:
    server, a, state = flask_app
    for i in range(12):
        assert request(f"{server.url}/users/{i}").status == 200
    state.failing = True

    def shed() -> object:
        r = request(f"{server.url}/users/7")
        return r if r.status == 503 else None

    r = eventually("the failing route is shed", shed, every=0.002)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["route"] == "GET /users/<int:user_id>"
    state.failing = False
    eventually("the route recovers", lambda: request(f"{server.url}/users/7").status == 200, every=0.02)


def test_a_streamed_flask_response_is_reported_when_its_body_ends(
    flask_app: tuple[ThreadServer, Atrion, State],
) -> None:
    server, a, state = flask_app
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline() == b"first\n"
    s = a.route("GET /stream")
    assert s is None or s.updates == 0, "not reported before the body ends"
    state.release.set()
    assert resp.read() == b"last\n"
    conn.close()
    eventually("the stream is reported", lambda: (s := a.route("GET /stream")) and s.updates == 1)
