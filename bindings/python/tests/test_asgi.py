"""The ASGI middleware with FastAPI and Starlette, served by uvicorn over real HTTP."""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Iterator

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from atrion import Atrion
from atrion.asgi import AtrionMiddleware

from conftest import FAST, ThreadServer, eventually, free_port
from http_client import request


def serve(app: object) -> ThreadServer:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))

    def stop() -> None:
        server.should_exit = True

    return ThreadServer(server.run, stop, port)


class State:
    failing = False
    release = threading.Event()


@pytest.fixture
def fastapi_app() -> Iterator[tuple[ThreadServer, Atrion]]:
    atrion = Atrion(config=FAST)
    state = State()
    state.release = threading.Event()
    app = FastAPI()
    app.add_middleware(AtrionMiddleware, atrion=atrion)  # the one line

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        if state.failing:
            raise HTTPException(status_code=500, detail="down")
        return {"id": user_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            while not state.release.is_set():
                await asyncio.sleep(0.005)
            yield b"last\n"

        return StreamingResponse(body(), media_type="text/plain")

    server = serve(app)
    server.state = state  # type: ignore[attr-defined]
    yield server, atrion
    server.stop()
    atrion.close()


def test_fastapi_routes_are_named_by_their_template(fastapi_app: tuple[ThreadServer, Atrion]) -> None:
    server, atrion = fastapi_app
    for i in (1, 2, 3):
        assert request(f"{server.url}/users/{i}").json() == {"id": i}
    assert request(f"{server.url}/nowhere/{42}").status == 404
    eventually("three reports on the template", lambda: (s := atrion.route("GET /users/{user_id}")) and s.updates == 3)
    assert "GET /users/1" not in atrion.routes()
    assert "GET <unmatched>" in atrion.routes()


def test_fastapi_sheds_a_failing_route_and_recovers(fastapi_app: tuple[ThreadServer, Atrion]) -> None:
    server, atrion = fastapi_app
    state: State = server.state  # type: ignore[attr-defined]
    for i in range(12):
        assert request(f"{server.url}/users/{i}").status == 200
    state.failing = True

    def shed() -> object:
        r = request(f"{server.url}/users/7")
        return r if r.status == 503 else None

    r = eventually("the failing route is shed", shed, every=0.002)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    problem = r.json()
    assert problem["status"] == 503 and problem["route"] == "GET /users/{user_id}"
    assert problem["retry_after"] > 0
    state.failing = False
    eventually("the route recovers", lambda: request(f"{server.url}/users/7").status == 200, every=0.02)


def test_a_streamed_response_is_reported_when_its_body_ends(fastapi_app: tuple[ThreadServer, Atrion]) -> None:
    server, atrion = fastapi_app
    state: State = server.state  # type: ignore[attr-defined]
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline() == b"first\n"
    # Headers and the first chunk are out; the body has not ended: nothing reported yet.
    s = atrion.route("GET /stream")
    assert s is None or s.updates == 0
    state.release.set()
    assert resp.read() == b"last\n"
    conn.close()
    eventually("the stream is reported", lambda: (s := atrion.route("GET /stream")) and s.updates == 1)


def test_starlette_routes_and_shed() -> None:
    atrion = Atrion(config=FAST)
    failing = [False]

    async def item(request: Request) -> PlainTextResponse:
        if failing[0]:
            return PlainTextResponse("down", status_code=502)
        return PlainTextResponse(request.path_params["name"])

    app = Starlette(routes=[Route("/items/{name}", item)])
    app.add_middleware(AtrionMiddleware, atrion=atrion)
    server = serve(app)
    try:
        for i in range(12):
            assert request(f"{server.url}/items/n{i}").body == f"n{i}".encode()
        assert atrion.routes() == ["GET /items/{name}"]
        failing[0] = True
        eventually("shed", lambda: request(f"{server.url}/items/x").status == 503, every=0.002)
    finally:
        server.stop()
        atrion.close()
