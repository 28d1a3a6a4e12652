"""The answer to a shed request, shared by the middleware: 503, ``Retry-After`` and an
``application/problem+json`` body (RFC 9457)."""

from __future__ import annotations

import json
import math
from typing import List, Tuple

from ._native import Shed

PROBLEM_TYPE = "application/problem+json"


def retry_after_header(shed: Shed) -> str:
    """Whole seconds, rounded up, at least 1 (``Retry-After`` takes no fractions)."""
    r = shed.retry_after
    return str(max(1, math.ceil(r))) if r is not None else "1"


def problem(shed: Shed) -> Tuple[bytes, List[Tuple[str, str]]]:
    """The body and headers of a shed answer."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": f"route {shed.route} is shedding load ({shed.reason}); retry later",
            "route": shed.route,
            "reason": shed.reason,
            "retry_after": shed.retry_after,
        }
    ).encode()
    headers = [
        ("content-type", PROBLEM_TYPE),
        ("retry-after", retry_after_header(shed)),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]
    return body, headers
