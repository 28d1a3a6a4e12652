"""The Django middleware class, the project served through its WSGI handler by a real WSGI
server over real HTTP."""

from __future__ import annotations

import sys
import types
from typing import Any, Iterator

import pytest

from atrion import Atrion

from conftest import FAST, eventually
from http_client import request
from wsgi_server import serve

FAILING = [False]


def _project() -> tuple[Any, Atrion]:
    import django
    from django.conf import settings
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    a = Atrion(config=FAST)

    def user(request: Any, user_id: int) -> Any:
        if FAILING[0]:
            return HttpResponse("down", status=500)
        return JsonResponse({"id": user_id})

    urls = types.ModuleType("atrion_test_urls")
    urls.urlpatterns = [path("users/<int:user_id>", user)]  # type: ignore[attr-defined]
    sys.modules["atrion_test_urls"] = urls
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="atrion_test_urls",
        MIDDLEWARE=["atrion.django.AtrionMiddleware"],
        ATRION=a,
        SECRET_KEY="test",
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application(), a


@pytest.fixture(scope="module")
def django_app() -> Iterator[tuple[Any, Atrion]]:
    app, a = _project()
    server = serve(app)
    yield server, a
    server.stop()
    a.close()


def test_django_routes_shed_and_recover(django_app: tuple[Any, Atrion]) -> None:
    server, a = django_app
    for i in range(12):
        assert request(f"{server.url}/users/{i}").json() == {"id": i}
    eventually("reports on the pattern", lambda: (s := a.route("GET /users/<int:user_id>")) and s.updates == 12)
    assert request(f"{server.url}/nope").status == 404
    FAILING[0] = True

    def shed() -> object:
        r = request(f"{server.url}/users/7")
        return r if r.status == 503 else None

    r = eventually("the failing route is shed", shed, every=0.002)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    FAILING[0] = False
    eventually("the route recovers", lambda: request(f"{server.url}/users/7").status == 200, every=0.02)
