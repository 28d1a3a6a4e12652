"""A Django middleware class.

In ``settings.py``::

    ATRION = atrion.Atrion()                       # or a dotted path to one: "myapp.atrion"
    MIDDLEWARE = ["atrion.django.AtrionMiddleware", ...]   # first, so it sees every request

Each request is decided on ``"{METHOD} {route}"``, the route the URL resolver matches
(``request.resolver_match.route``: ``users/<int:id>``), resolved here before the view
runs; a path no pattern matches is decided on ``"{METHOD} <unmatched>"``. A shed answers
503 with ``Retry-After`` and an ``application/problem+json`` body. An admitted request is
reported when its response is closed by the server, after its whole body was sent
(streaming responses included): a failure if the view raised or answered 5xx. A request
carrying ``X-Retry-Attempt: N`` (a client's N-th retry) is decided N priority tiers
lower, critical staying critical, so that retries are shed before first tries.
"""

from __future__ import annotations

from typing import Any, Callable

from ._native import Atrion, Shed, retry_attempt
from ._problem import problem

UNMATCHED = "<unmatched>"


def _configured() -> Atrion:
    from django.conf import settings
    from django.utils.module_loading import import_string

    value = getattr(settings, "ATRION", None)
    if isinstance(value, str):
        value = import_string(value)
    if not isinstance(value, Atrion):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("settings.ATRION must be an atrion.Atrion or a dotted path to one")
    return value


def route_of(request: Any) -> str:
    """``"{METHOD} {pattern}"`` from Django's URL resolver."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(request.path_info)
    except Resolver404:
        return f"{request.method} {UNMATCHED}"
    return f"{request.method} /{match.route}"


class AtrionMiddleware:
    """Admission control for a Django project (``settings.ATRION``)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.atrion = _configured()

    def __call__(self, request: Any) -> Any:
        from django.http import HttpResponse

        route = route_of(request)
        attempt = request.META.get("HTTP_X_RETRY_ATTEMPT")
        try:
            admission = self.atrion._enter(route, None, retry_attempt(attempt) if attempt else 0)
        except Shed as shed:
            body, headers = problem(shed)
            response = HttpResponse(body, status=503, content_type=headers[0][1])
            for k, v in headers[1:]:
                if k != "content-length":
                    response[k] = v
            return response
        try:
            response = self.get_response(request)
        except BaseException:
            admission.finish(False)
            raise
        ok = response.status_code < 500
        # Reported when the server closes the response: after the last byte of the body.
        response._resource_closers.append(lambda: admission.finish(ok))
        return response


