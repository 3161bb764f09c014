"""The supervisor's restart rules with a fake clock and fake processes (no OS processes here;
tests/e2e/test_meshctl_up.py runs the real ones)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import pytest

from meshbus.bus.errors import UnavailableError
from meshbus.control.cli.supervisor import Backoff, Supervisor


@dataclass
class FakeProcess:
    pids: list[int] = field(default_factory=lambda: [100])
    code: int | None = None
    fail_starts: int = 0
    signals: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    _pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    def start(self, group: int) -> int:
        if self.fail_starts:
            self.fail_starts -= 1
            raise UnavailableError("meshbus-ca did not answer")
        self.groups.append(group)
        self._pid, self.code = self.pids.pop(0), None
        return self._pid

    def poll(self) -> int | None:
        return self.code

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.code = -sig

    def wait(self, timeout: float) -> bool:
        return self.code is not None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(clock: Clock, said: list[str]) -> Supervisor:
    return Supervisor(backoff=Backoff(base=0.5, cap=4.0, stable_after=10.0), clock=clock, say=said.append)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.5, cap=4.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_crash_loop_backs_off_and_a_stable_run_resets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.killpg", lambda pgid, sig: None)
    clock, said = Clock(), []
    sup = _supervisor(clock, said)
    proc = FakeProcess(pids=[100, 101, 102, 103])
    entry = sup.add("reviews-v1", "app", proc)
    assert sup.pgid == 100 and proc.groups == [0]  # the first child leads the group

    delays = []
    for pid in (100, 101, 102):
        clock.now += 1.0  # dies a second after its start: a crash loop
        proc.code = 1
        sup.poll()
        assert entry.state == "restarting" and entry.due is not None
        delays.append(entry.due - clock.now)
        clock.now = entry.due
        assert sup.poll() == ["reviews-v1"] and proc.pid == pid + 1
    assert delays == [0.5, 1.0, 2.0]
    assert entry.restarts == 3 and proc.groups == [0, 100, 100, 100]  # restarts join the group
    assert said[0] == "reviews-v1 (pid 100) exited with code 1; restarting in 0.5s (see its log)"

    clock.now += 60.0  # ran a minute: the next exit is a fresh first crash
    proc.code = -signal.SIGKILL
    sup.poll()
    assert entry.due == clock.now + 0.5
    assert "was killed by SIGKILL" in said[-1]


def test_a_restart_that_cannot_start_is_tried_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.killpg", lambda pgid, sig: None)
    clock, said = Clock(), []
    sup = _supervisor(clock, said)
    proc = FakeProcess(pids=[100, 101])
    entry = sup.add("reviews-v1-sidecar", "inbound", proc)
    clock.now += 1.0
    proc.code, proc.fail_starts = 1, 1
    sup.poll()
    clock.now = entry.due or 0.0
    assert sup.poll() == []  # no token: not started, rescheduled with a longer delay
    assert (
        said[-1] == "reviews-v1-sidecar could not start: meshbus: meshbus-ca did not answer; next try in 1.0s"
    )
    clock.now = entry.due or 0.0
    assert sup.poll() == ["reviews-v1-sidecar"] and entry.restarts == 1


def test_stop_all_stops_the_stop_last_ones_after_the_rest_and_restarts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed = []
    monkeypatch.setattr("os.killpg", lambda pgid, sig: killed.append((pgid, sig)))
    clock, order = Clock(), []
    sup = _supervisor(clock, [])
    nats, config, app = FakeProcess(pids=[10]), FakeProcess(pids=[11]), FakeProcess(pids=[12])
    for name, proc in (("nats-server", nats), ("meshbus-config", config), ("reviews-v1", app)):
        original = proc.signal
        proc.signal = lambda sig, name=name, original=original: (order.append(name), original(sig))  # type: ignore[method-assign]
    sup.add("nats-server", "", nats, stop_last=True)
    sup.add("meshbus-config", "", config)
    sup.add("reviews-v1", "", app)
    sup.stop_all(grace=1.0)
    assert order == ["reviews-v1", "meshbus-config", "nats-server"]
    assert killed[-1] == (10, signal.SIGKILL)  # then the whole group, for children's children
    assert sup.poll() == [] and all(e.due is None for e in sup.entries)  # no restart while stopping
