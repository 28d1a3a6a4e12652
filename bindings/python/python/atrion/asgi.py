"""ASGI middleware for Starlette and FastAPI (and any ASGI app).

One line::

    app.add_middleware(AtrionMiddleware, atrion=atrion)

Each HTTP request is decided on ``"{METHOD} {route template}"`` (``GET /users/{id}``),
the template matched against the application's routes (``scope["app"].routes``) before
the request runs, as Starlette's router will match it. A request matching no route is
decided on ``"{METHOD} <unmatched>"``, so that random paths cannot fill the route table.
A shed answers 503 with ``Retry-After`` and an ``application/problem+json`` body. An
admitted request is reported when its response body ends (streaming included): a
failure if the app raised or answered 5xx. A request carrying ``X-Retry-Attempt: N`` (a
client's N-th retry) is decided N priority tiers lower, critical staying critical, so that
retries are shed before first tries.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Tuple

from ._native import Atrion, Shed, retry_attempt
from ._problem import problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteOf = Callable[[Scope], str]

UNMATCHED = "<unmatched>"
_CACHE_MAX = 4096


def _template(routes: Any, scope: Scope) -> Optional[str]:
    """The path template of the first route that fully matches ``scope``, if any."""
    try:
        from starlette.routing import Match, Mount
    except ImportError:  # not a Starlette app
        return None
    partial: Optional[str] = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            if isinstance(route, Mount):
                inner = getattr(route, "routes", None)
                if inner:
                    sub: Dict[str, Any] = dict(scope)
                    sub.update(child)
                    found = _template(inner, sub)
                    if found is not None:
                        return route.path + found
                return route.path + "/*"
            return str(route.path)
        if match == Match.PARTIAL and partial is None:
            # Path matched, method did not (a 405): still the same route.
            partial = str(route.path)
    return partial


class StarletteRoutes:
    """The route id of a request from the Starlette (FastAPI) app's own routes, cached per
    method and path (bounded)."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[str, str], str] = {}

    def __call__(self, scope: Scope) -> str:
        method = scope.get("method", "GET")
        path = scope.get("path", "/")
        key = (method, path)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        app = scope.get("app")
        routes = getattr(app, "routes", None)
        template = _template(routes, scope) if routes is not None else None
        route = f"{method} {template if template is not None else UNMATCHED}"
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = route
        return route


def scope_attempt(scope: Scope) -> int:
    """The retry's number in the request's ``X-Retry-Attempt`` header (0: a first try)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-retry-attempt":
            return retry_attempt(value.decode("latin-1"))
    return 0


class AtrionMiddleware:
    """Admission control for an ASGI app. ``route_of(scope)`` names a request's route
    (default: :class:`StarletteRoutes`); ``priority_of(scope)`` its priority (default
    normal)."""

    def __init__(
        self,
        app: ASGIApp,
        atrion: Atrion,
        route_of: Optional[RouteOf] = None,
        priority_of: Optional[Callable[[Scope], Optional[str]]] = None,
    ) -> None:
        self.app = app
        self.atrion = atrion
        self.route_of: RouteOf = route_of if route_of is not None else StarletteRoutes()
        self.priority_of = priority_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(scope)
        priority = self.priority_of(scope) if self.priority_of is not None else None
        try:
            admission = self.atrion._enter(route, priority, scope_attempt(scope))
        except Shed as shed:
            body, headers = problem(shed)
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(k.encode(), v.encode()) for k, v in headers],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        status: List[int] = [0]

        async def send_and_watch(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                admission.finish(status[0] < 500)

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            admission.finish(False)
            raise
        # A response that never ended (client gone): reported now; a second finish does
        # nothing.
        admission.finish(0 < status[0] < 500)
