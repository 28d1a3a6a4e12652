"""What the tests share: waiting for an event with a deadline (never a wall-clock
assertion), physics that trips quickly, free ports, servers in threads."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

import pytest

from atrion import Atrion

T = TypeVar("T")

#: Physics that scars within milliseconds and probes soon after a trip, so that a test can
#: trip a route and see it recover quickly.
FAST = {
    "scar_rate": 2000,
    "smoothing": 0.005,
    "half_open": {"open_base": 0.2, "scout_interval": 0.05},
}


def eventually(what: str, f: Callable[[], Optional[T]], every: float = 0.01, deadline: float = 60.0) -> T:
    """Polls ``f`` until it returns something other than None/False; fails after 60 s."""
    until = time.monotonic() + deadline
    last: Optional[BaseException] = None
    while True:
        try:
            v = f()
            if v is not None and v is not False:
                return v
        except Exception as e:  # noqa: BLE001 - reported if the deadline passes
            last = e
        if time.monotonic() > until:
            raise AssertionError(f"not within {deadline} s: {what} (last error: {last!r})")
        time.sleep(every)


def trip(atrion: Atrion, route: str) -> Any:
    """Reports failures on ``route`` (after a healthy bootstrap) until it is open."""
    for _ in range(12):
        atrion.report(route, 5, True)

    def tripped() -> Any:
        atrion.report(route, 5, False)
        d = atrion.decide(route)
        return d if (not d.admitted and d.mode == "open") else None

    return eventually(f"{route} trips", tripped, every=0.002)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def fast() -> Iterator[Atrion]:
    a = Atrion(config=FAST)
    yield a
    a.close()


class ThreadServer:
    """A server run in a daemon thread, stopped by ``stop``."""

    def __init__(self, start: Callable[[], None], stop: Callable[[], None], port: int) -> None:
        self.port = port
        self._stop = stop
        self._thread = threading.Thread(target=start, daemon=True)
        self._thread.start()
        eventually(f"the server listens on {port}", lambda: listening(port))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop()
        self._thread.join(timeout=30)
