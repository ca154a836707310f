"""The idle timeline on a controllable clock: grace, warning, stop, activity resets, the upload gate."""
from __future__ import annotations

from services.autostop.signals import Signal
from services.autostop.timeline import Timeline

IDLE, WARN, GRACE = 600.0, 60.0, 900.0


def _timeline() -> Timeline:
    return Timeline(boot=0.0, idle_seconds=IDLE, warn_seconds=WARN, grace_seconds=GRACE, action_names=["runpod"],
                    busy_window=60)


def _quiet() -> list[Signal]:
    return [Signal("gpu", None, "no GPU"), Signal("ssh", None, "no ssh session")]


def test_nothing_stops_during_the_boot_grace_even_when_idle():
    t = _timeline()
    assert t.evaluate(IDLE + WARN + 1, _quiet(), []).state == "grace"
    assert t.evaluate(GRACE + 1, _quiet(), []).state == "stop"


def test_idle_then_warning_then_stop():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    assert t.evaluate(IDLE - 1, _quiet(), []).state == "idle"
    first = t.evaluate(IDLE + 1, _quiet(), [])
    assert first.state == "warning" and "stopping in 59 s (runpod)" in first.message
    assert t.evaluate(IDLE + 2, _quiet(), []).state == "warned"  # warned once, not at every poll
    assert t.evaluate(IDLE + WARN + 1, _quiet(), []).state == "stop"


def test_activity_resets_the_timer_at_any_point():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    assert t.evaluate(IDLE + 30, _quiet(), []).state == "warning"
    busy = t.evaluate(IDLE + 40, [Signal("ssh", IDLE + 40, "1 ssh session")], [])
    assert busy.state == "busy" and busy.message == "busy: 1 ssh session"
    later = t.evaluate(IDLE + 40 + IDLE - 10, _quiet(), [])
    assert later.state == "idle" and later.stops_in == 70


def test_past_activity_from_a_heartbeat_counts_from_when_it_happened():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    decision = t.evaluate(1000.0, [Signal("heartbeat", 900.0, "heartbeat 100 s ago")], [])
    assert decision.state == "idle" and decision.idle_seconds == 100


def test_a_pending_upload_holds_the_stop_until_drained():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    held = t.evaluate(IDLE + WARN + 5, _quiet(), ["waiting for 2 upload(s)"])
    assert held.state == "waiting" and "waiting for 2 upload(s)" in held.message
    assert t.evaluate(IDLE + WARN + 50, _quiet(), []).state == "stop"


def test_a_failed_probe_counts_as_activity():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    failed = Signal("jupyter", IDLE + WARN + 5, "jupyter probe failed (ConnectionError), counted as activity", True)
    decision = t.evaluate(IDLE + WARN + 5, [failed], [])
    assert decision.state == "busy" and "probe failed" in decision.message


def test_a_destination_that_always_fails_stops_the_pod_after_the_cap_only_when_nothing_is_lost():
    failing = ["waiting for 3 upload(s): s3://bkt FAILING: 403 Forbidden"]
    due = IDLE + WARN + 1
    safe = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60, max_wait=1800)
    asked: list[float] = []
    assert safe.evaluate(due, _quiet(), failing, lambda: asked.append(due) or []).state == "waiting"
    assert safe.evaluate(due + 1799, _quiet(), failing, lambda: []).state == "waiting"
    assert asked == [], "what a stop would lose is asked only once the wait is over"
    stop = safe.evaluate(due + 1800, _quiet(), failing, lambda: [])
    assert stop.state == "stop" and "held by at least one destination" in stop.message

    risky = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60, max_wait=1800)
    risky.evaluate(due, _quiet(), failing, lambda: ["2 checkpoint(s) held by no destination"])
    stuck = risky.evaluate(due + 4000, _quiet(), failing, lambda: ["2 checkpoint(s) held by no destination"])
    assert stuck.state == "stuck" and "NOT STOPPING after 67 min" in stuck.message and "403 Forbidden" in stuck.message
    assert "2 checkpoint(s) held by no destination" in stuck.message


def test_the_wait_starts_again_after_the_uploads_drained_once():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60, max_wait=100)
    due = IDLE + WARN + 1
    t.evaluate(due, _quiet(), ["waiting for 1 upload(s)"])
    t.evaluate(due + 50, [Signal("ssh", due + 50, "1 ssh session")], [])
    late = due + 50 + IDLE + WARN + 1
    assert t.evaluate(late, _quiet(), ["waiting for 1 upload(s)"]).state == "waiting"
    assert t.evaluate(late + 99, _quiet(), ["waiting for 1 upload(s)"], lambda: []).state == "waiting"


def test_no_cap_waits_forever():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60, max_wait=0)
    assert t.evaluate(10 ** 7, _quiet(), ["waiting for 1 upload(s)"], lambda: []).state == "waiting"


def test_a_probe_failing_longer_than_the_idle_timeout_stops_counting_and_says_so():
    t = Timeline(0.0, IDLE, WARN, 0.0, ["runpod"], 60)
    broken = lambda now: [Signal("jupyter", now, "jupyter probe failed (ConnectionError), counted as activity", True)]
    assert t.evaluate(10, broken(10), []).state == "busy", "a passing failure still counts"
    assert t.evaluate(IDLE, broken(IDLE), []).state == "busy"
    late = t.evaluate(IDLE + 11, broken(IDLE + 11), [])
    assert late.state == "idle" and "WARNING: the jupyter probe has failed for 10 min" in late.message
    assert set(late.warnings) == {"jupyter"}
    assert t.evaluate(IDLE * 2 + WARN + 20, broken(IDLE * 2 + WARN + 20), []).state == "stop"
    healed = t.evaluate(IDLE * 3, [Signal("jupyter", None, "jupyter last active 5 s ago")], [])
    assert healed.warnings == {}
