"""Atrion: physics-based admission control, in process.

>>> from atrion import Atrion, Shed
>>> atrion = Atrion()                      # or Atrion(store="redis://127.0.0.1:6379")
>>> with atrion.guard("GET /users"):       # measures latency; an exception is a failure
...     pass
>>> atrion.decide("GET /users").admitted
True

Processes that fork (gunicorn, uWSGI with ``--preload``): make the ``Atrion`` in each
worker, after the fork. Its background thread (the cluster pulse, the lease sweeper) does
not survive a fork.

Middleware: ``atrion.asgi.AtrionMiddleware`` (Starlette, FastAPI),
``atrion.wsgi.AtrionMiddleware`` (Flask, any WSGI app), ``atrion.django.AtrionMiddleware``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Optional, Type

from . import _native
from ._native import (
    PRIORITIES,
    RETRY_ATTEMPT_HEADER,
    Admission,
    AtrionError,
    InvalidInput,
    Lease,
    LeaseError,
    RouteState,
    Shed,
    StoreError,
    retry_attempt,
)
from ._native import Decision as Decision

__all__ = [
    "PRIORITIES",
    "RETRY_ATTEMPT_HEADER",
    "Admission",
    "Atrion",
    "AtrionError",
    "Decision",
    "Guard",
    "InvalidInput",
    "Lease",
    "LeaseError",
    "RouteState",
    "Shed",
    "StoreError",
    "retry_attempt",
]
__version__: str = _native.__version__


class Guard:
    """One request on a route, as a context manager (``with`` or ``async with``).

    On entry it decides: a shed raises :class:`Shed` (with ``retry_after`` in seconds).
    On exit it reports the latency since entry; an exception escaping the block, or
    :meth:`fail`, makes it a failure. The exception is never swallowed.
    """

    __slots__ = ("_atrion", "_route", "_priority", "_attempt", "_admission", "_failed", "saturation")

    def __init__(
        self, atrion: _native.Atrion, route: str, priority: Optional[str] = None, attempt: Optional[int] = None
    ) -> None:
        self._atrion = atrion
        self._route = route
        self._priority = priority
        self._attempt = attempt
        self._admission: Optional[Admission] = None
        self._failed = False
        #: The route's saturation in [0, 1], if the caller measures it.
        self.saturation: Optional[float] = None

    @property
    def route(self) -> str:
        """The route id."""
        return self._route

    def fail(self) -> None:
        """Marks the request as failed, without raising."""
        self._failed = True

    def __enter__(self) -> "Guard":
        self._admission = self._atrion._enter(self._route, self._priority, self._attempt)
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        admission = self._admission
        if admission is not None:
            self._admission = None
            admission.finish(exc_type is None and not self._failed, self.saturation)

    async def __aenter__(self) -> "Guard":
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Atrion(_native.Atrion):
    """The engine in this process.

    ``Atrion(store="memory" | "file:PATH" | "redis://…" | "rediss://…" | "postgres://…",
    model="default" | "reference", config=None)``; keyword-only: ``node_id``, ``namespace``,
    ``pulse`` (seconds), ``connect``. With a shared store, routes' scar tissue is shared
    with every node (Python, Rust or the ``atrion serve`` sidecar) on it. ``close()`` (or
    ``with Atrion(...) as atrion:``) leaves the cluster.
    """

    def guard(self, route: str, priority: Optional[str] = None, attempt: Optional[int] = None) -> Guard:
        """A :class:`Guard` for one request on ``route`` (``with`` or ``async with``).

        ``attempt``: the client's retry number (``None`` or 0: a first try); a retry is
        decided one priority tier lower per retry, critical staying critical."""
        return Guard(self, route, priority, attempt)

    def __enter__(self) -> "Atrion":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
