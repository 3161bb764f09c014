"""The files a running `meshctl up` keeps: a pid file only a live supervisor holds, and up.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshbus.control.cli.up_state import (
    AlreadyRunning,
    PidLock,
    ProcessRecord,
    UpState,
    read_state,
    running_pid,
    start_ticks,
    write_state,
)


def test_the_pid_file_counts_only_while_its_lock_is_held(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None
    lock = PidLock(tmp_path)
    lock.acquire()
    assert running_pid(tmp_path) == os.getpid()
    with pytest.raises(AlreadyRunning, match=f"already running for {tmp_path} \\(pid {os.getpid()}\\)"):
        PidLock(tmp_path).acquire()
    lock.release()
    assert running_pid(tmp_path) is None and not (tmp_path / "up.pid").exists()

    (tmp_path / "up.pid").write_text("4242\n")  # left by a supervisor that was SIGKILLed
    assert running_pid(tmp_path) is None
    again = PidLock(tmp_path)
    again.acquire()  # and a new one takes it over
    assert running_pid(tmp_path) == os.getpid()
    again.release()


def test_a_record_is_alive_only_as_the_very_process_recorded(tmp_path: Path) -> None:
    me = start_ticks(os.getpid())
    assert me is not None
    assert ProcessRecord("self", os.getpid(), me).alive()
    assert not ProcessRecord("reused pid", os.getpid(), me + 1).alive()
    state = UpState(1, "up", "nats://127.0.0.1:4222", 7, "logs", [ProcessRecord("self", os.getpid(), me, 2)])
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
