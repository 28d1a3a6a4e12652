"""Task leases: one that completes, one released, one that expires and is aborted."""

from __future__ import annotations

import pytest

from atrion import Atrion, InvalidInput, LeaseError, Shed

from conftest import eventually, trip


def test_a_lease_that_completes() -> None:
    a = Atrion()
    lease = a.start_task("jobs/report", profile="standard")
    assert lease.active and not lease.aborted
    assert lease.route == "jobs/report" and lease.profile == "standard"
    assert lease.id > 0 and lease.remaining > 0
    assert a.active_tasks("jobs/report") == 1
    lease.heartbeat()
    assert lease.complete() == "completed"
    assert not lease.active
    assert a.active_tasks("jobs/report") == 0
    with pytest.raises(LeaseError):
        lease.complete()
    s = a.route("jobs/report")
    assert s is not None and s.updates == 1, "a completed lease is one sample of its route"


def test_a_lease_as_a_context_manager_completes_or_fails() -> None:
    a = Atrion()
    with a.start_task("jobs/ok") as lease:
        assert a.active_tasks("jobs/ok") == 1
    assert not lease.active and a.active_tasks("jobs/ok") == 0
    with pytest.raises(KeyError):
        with a.start_task("jobs/bad", profile="heavy"):
            raise KeyError("x")
    assert a.active_tasks("jobs/bad") == 0
    s = a.route("jobs/bad")
    assert s is not None and s.pressure[1] > 0, "the escaped exception was reported as a failure"


def test_a_released_lease_reports_nothing() -> None:
    a = Atrion()
    lease = a.start_task("jobs/r")
    lease.release()
    assert a.active_tasks("jobs/r") == 0
    s = a.route("jobs/r")
    assert s is None or s.updates == 0


def test_a_lease_past_its_max_duration_is_aborted_by_the_sweeper() -> None:
    a = Atrion()
    lease = a.start_task("jobs/hung", max_duration=0.05)
    # The background sweeper aborts it on time; nobody calls meanwhile.
    eventually("the hung lease is aborted", lambda: lease.aborted)
    assert lease.abort_reason == "max_duration"
    assert not lease.active
    assert a.active_tasks("jobs/hung") == 0
    with pytest.raises(LeaseError):
        lease.heartbeat()
    s = a.route("jobs/hung")
    assert s is not None and s.updates == 1 and s.pressure[1] > 0, "an abort is a failure"
    a.close()


def test_a_lease_that_misses_heartbeats_is_aborted_by_a_sweep() -> None:
    # Without the background sweeper: `sweep_tasks` is the caller's own timer.
    a = Atrion(connect=False)
    lease = a.start_task("jobs/silent", heartbeat=0.02, max_duration=60)

    def swept() -> bool:
        a.sweep_tasks()
        return lease.aborted

    eventually("the silent lease is aborted", swept)
    assert lease.abort_reason == "missed_heartbeat"


def test_a_tripped_route_sheds_tasks_and_bad_options_are_refused(fast: Atrion) -> None:
    trip(fast, "jobs/x")
    with pytest.raises(Shed) as info:
        fast.start_task("jobs/x", priority="low")
    assert info.value.retry_after is not None
    with pytest.raises(InvalidInput):
        fast.start_task("jobs/y", profile="enormous")
    with pytest.raises(InvalidInput):
        fast.start_task("jobs/y", max_duration=-1)
    with pytest.raises(InvalidInput):
        fast.start_task("")


def test_a_lease_aborted_inside_its_with_block_stays_aborted() -> None:
    a = Atrion(connect=False)
    with a.start_task("jobs/late", max_duration=0.02) as lease:

        def swept() -> bool:
            a.sweep_tasks()
            return lease.aborted

        eventually("the lease runs out", swept)
    assert lease.abort_reason == "max_duration"
    assert a.active_tasks("jobs/late") == 0
    s = a.route("jobs/late")
    assert s is not None and s.updates == 1, "reported once, as the abort's failure"
