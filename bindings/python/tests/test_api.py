"""The Python API over the engine: decisions, reports, guards, inspection, errors."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import pytest

import atrion
from atrion import Atrion, InvalidInput, Shed, StoreError

from conftest import FAST, eventually, trip


def test_a_new_route_is_admitted_and_the_decision_has_every_field() -> None:
    a = Atrion()
    d = a.decide("GET /users")
    assert d.admitted is True and bool(d)
    assert d.reason == "bootstrap"
    assert d.retry_after is None
    assert d.mode == "bootstrap"
    assert isinstance(d.resistance, float) and d.resistance > 0
    assert "admitted=True" in repr(d)
    assert "critical" in atrion.PRIORITIES and "bulk" in atrion.PRIORITIES


def test_reports_are_learned_and_inspectable() -> None:
    a = Atrion()
    assert a.route("GET /x") is None
    for _ in range(20):
        a.report("GET /x", 12.5, True)
    a.report("GET /x", 3, ok=False, saturation=0.5)
    s = a.route("GET /x")
    assert s is not None
    assert s.route == "GET /x"
    assert s.updates == 21
    assert s.mode == "operational"
    assert len(s.pressure) == 3
    assert s.active_tasks == 0
    assert a.routes() == ["GET /x"]


def test_bad_input_raises_typed_errors() -> None:
    a = Atrion()
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(InvalidInput, match="latency_ms"):
            a.report("GET /x", bad, True)
    with pytest.raises(InvalidInput, match="empty"):
        a.decide("")
    with pytest.raises(InvalidInput):
        a.report("", 1.0)
    with pytest.raises(ValueError):  # InvalidInput is a ValueError
        a.decide("GET /x", priority="urgent")
    with pytest.raises(InvalidInput, match="saturation|Saturation"):
        a.report("GET /x", 1.0, True, saturation=2.0)
    with pytest.raises(InvalidInput, match="store"):
        Atrion(store="mongodb://nowhere")
    with pytest.raises(InvalidInput):
        Atrion(model="quantum")
    with pytest.raises(InvalidInput, match="config"):
        Atrion(config={"scar_rate": "fast"})
    with pytest.raises(InvalidInput):
        Atrion(config={"model": "reference"})


def test_an_unreachable_store_is_a_store_error() -> None:
    from conftest import free_port

    with pytest.raises(StoreError):
        Atrion(store=f"redis://127.0.0.1:{free_port()}")


def test_a_file_store_opens_and_persists(tmp_path: Path) -> None:
    url = f"file:{tmp_path / 'state.redb'}"
    with Atrion(store=url, config=FAST) as a:
        assert a.store == url
        trip(a, "GET /f")
    assert (tmp_path / "state.redb").exists()


def test_a_guard_reports_latency_and_outcome() -> None:
    a = Atrion()
    with a.guard("GET /g") as g:
        assert g.route == "GET /g"
    with pytest.raises(RuntimeError, match="boom"):
        with a.guard("GET /g"):
            raise RuntimeError("boom")
    with a.guard("GET /g") as g:
        g.fail()
    s = a.route("GET /g")
    assert s is not None and s.updates == 3
    assert s.pressure[1] > 0, "the failures raised the error pressure"


def test_a_tripped_route_sheds_with_retry_after_and_the_guard_raises_shed(fast: Atrion) -> None:
    d = trip(fast, "GET /pay")
    assert d.reason == "open"
    assert d.retry_after is not None and d.retry_after > 0
    with pytest.raises(Shed) as info:
        with fast.guard("GET /pay", priority="low"):
            pytest.fail("a shed guard does not run its block")
    e = info.value
    assert e.route == "GET /pay"
    assert e.reason in ("open", "overloaded")
    assert e.retry_after is not None and e.retry_after > 0
    assert isinstance(e, atrion.AtrionError)


def test_a_tripped_route_recovers_when_requests_succeed(fast: Atrion) -> None:
    trip(fast, "GET /heal")

    def healed() -> bool:
        try:
            with fast.guard("GET /heal"):
                pass
        except Shed:
            return False
        return fast.decide("GET /heal").mode == "operational"

    eventually("GET /heal recovers", healed, every=0.02)


def test_async_with() -> None:
    a = Atrion()

    async def main() -> None:
        async with a.guard("GET /async"):
            await asyncio.sleep(0)
        with pytest.raises(ValueError):
            async with a.guard("GET /async"):
                raise ValueError("no")

    asyncio.run(main())
    s = a.route("GET /async")
    assert s is not None and s.updates == 2


def test_threads_decide_and_report_at_once() -> None:
    a = Atrion()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(2000):
                a.decide(f"GET /t{i % 3}")
                a.report(f"GET /t{i % 3}", 1.0, True)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(s.updates for s in (a.route(f"GET /t{i}") for i in range(3)) if s) == 12000


def test_exceptions_are_named_as_the_package_exports_them() -> None:
    for name in ("AtrionError", "Shed", "StoreError", "LeaseError", "InvalidInput"):
        cls = getattr(atrion, name)
        assert cls.__name__ == name and cls.__module__ == "atrion", (cls.__module__, cls.__name__)
    assert issubclass(atrion.LeaseError, atrion.AtrionError)
    assert issubclass(atrion.InvalidInput, ValueError)
