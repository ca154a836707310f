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
