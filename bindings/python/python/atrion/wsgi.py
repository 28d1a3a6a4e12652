"""WSGI middleware for Flask (and any WSGI app, Django through its WSGI handler).

One line for Flask::

    atrion.wsgi.flask(app, atrion)

Each request is decided on ``"{METHOD} {route}"``: for Flask the URL rule
(``/users/<int:id>``), matched with the app's own ``url_map`` before the request runs;
for another app, ``route_of(environ)`` (default: the raw path). A shed answers 503 with
``Retry-After`` and an ``application/problem+json`` body. An admitted request is
reported when the server closes its response iterable, i.e. after the whole body was
sent (streaming included): a failure if the app raised or answered 5xx. A request
carrying ``X-Retry-Attempt: N`` (a client's N-th retry) is decided N priority tiers
lower, critical staying critical, so that retries are shed before first tries.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ._native import Admission, Atrion, Shed, retry_attempt
from ._problem import problem

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteOf = Callable[[Environ], str]

UNMATCHED = "<unmatched>"


def raw_path(environ: Environ) -> str:
    """``"{METHOD} {PATH_INFO}"``: for apps without route templates."""
    return f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO') or '/'}"


def flask_rule(app: Any) -> RouteOf:
    """The route id from a Flask app's URL rules (``request.url_rule.rule``, known here
    before Flask dispatches)."""
    url_map = app.url_map

    def route_of(environ: Environ) -> str:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
            return f"{method} {rule.rule}"
        except Exception:  # 404, 405, redirects: not a route of the app
            return f"{method} {UNMATCHED}"

    return route_of


class _Body:
    """The app's response iterable, reporting when the server closes it."""

    __slots__ = ("_inner", "_admission", "_status", "_failed")

    def __init__(self, inner: Iterable[bytes], admission: Admission, status: List[int]) -> None:
        self._inner = inner
        self._admission = admission
        self._status = status
        self._failed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                yield chunk
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._admission.finish(not self._failed and 0 < self._status[0] < 500)


class AtrionMiddleware:
    """Admission control for a WSGI app."""

    def __init__(
        self,
        app: WSGIApp,
        atrion: Atrion,
        route_of: Optional[RouteOf] = None,
        priority_of: Optional[Callable[[Environ], Optional[str]]] = None,
    ) -> None:
        self.app = app
        self.atrion = atrion
        self.route_of: RouteOf = route_of if route_of is not None else raw_path
        self.priority_of = priority_of

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        route = self.route_of(environ)
        priority = self.priority_of(environ) if self.priority_of is not None else None
        attempt = environ.get("HTTP_X_RETRY_ATTEMPT")
        try:
            admission = self.atrion._enter(route, priority, retry_attempt(attempt) if attempt else 0)
        except Shed as shed:
            body, headers = problem(shed)
            start_response("503 Service Unavailable", headers)
            return [body]
        status: List[int] = [0]

        def watch(
            code: str,
            headers: List[Tuple[str, str]],
            exc_info: Optional[Tuple[type, BaseException, TracebackType]] = None,
        ) -> Any:
            try:
                status[0] = int(code.split(" ", 1)[0])
            except ValueError:
                status[0] = 500
            if exc_info is not None:
                return start_response(code, headers, exc_info)
            return start_response(code, headers)

        try:
            inner = self.app(environ, watch)
        except BaseException:
            admission.finish(False)
            raise
        return _Body(inner, admission, status)


def flask(app: Any, atrion: Atrion, priority_of: Optional[Callable[[Environ], Optional[str]]] = None) -> Any:
    """Wraps a Flask app's ``wsgi_app`` in :class:`AtrionMiddleware`, routes from its URL
    rules. Returns the app."""
    app.wsgi_app = AtrionMiddleware(app.wsgi_app, atrion, flask_rule(app), priority_of)
    return app
