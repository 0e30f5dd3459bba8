"""sd_notify against a real unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT

from agent import systemd


class Receiver:
    """A bound AF_UNIX datagram socket: what systemd listens on."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def get(self, timeout: float = 2.0) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def drain(self, quiet: float = 0.05) -> list[str]:
        out = []
        while (msg := self.get(quiet)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    r = Receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield r
    r.close()


def test_ready_status_stopping_arrive(receiver):
    assert systemd.ready("models loaded")
    assert receiver.get() == "READY=1\nSTATUS=models loaded"
    assert systemd.status("degraded: camera\nsecond line")
    assert receiver.get() == "STATUS=degraded: camera second line"
    assert systemd.extend_timeout(90)
    assert receiver.get() == "EXTEND_TIMEOUT_USEC=90000000"
    assert systemd.watchdog_ping()
    assert receiver.get() == "WATCHDOG=1"
    assert systemd.stopping()
    assert receiver.get() == "STOPPING=1"


def test_abstract_socket(monkeypatch):
    name = f"face-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    r = Receiver(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert r.get() == "READY=1"
    finally:
        r.close()


def test_noop_outside_systemd(monkeypatch):
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False
    assert systemd.watchdog_interval() is None
    dog = systemd.Watchdog()
    assert not dog.enabled and dog.period is None
    assert dog.frame_done() is False and dog.alive() is False


def test_missing_or_bad_socket_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert systemd.notify("READY=1") is False


def test_watchdog_interval_from_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # armed for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "x")
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert systemd.watchdog_interval() is None


def test_watchdog_rate_limit_with_a_clock(receiver):
    now = [100.0]
    dog = systemd.Watchdog(interval=10.0, clock=lambda: now[0])
    sent = []
    for _ in range(200):  # 200 frames, 0.1 s apart = 20 s: a ping at 0, 5, 10, 15 s
        sent.append(dog.frame_done())
        now[0] += 0.1
    assert sum(sent) == 4 == dog.pings
    assert receiver.drain() == ["WATCHDOG=1"] * 4


def test_pings_flow_with_frames_and_stop_when_the_loop_stalls(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping at most every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    dog = systemd.Watchdog()
    assert dog.enabled and dog.period == pytest.approx(0.1)
    hang = threading.Event()
    parked = threading.Event()
    stop = threading.Event()
    frames = []

    def frame_loop():  # the service's loop: capture/process a frame, then frame_done()
        while not stop.is_set():
            if hang.is_set():  # a camera read or a GPU call that never returns
                parked.set()
                stop.wait()
                break
            time.sleep(0.01)
            frames.append(1)
            dog.frame_done()

    thread = threading.Thread(target=frame_loop, daemon=True)
    thread.start()
    flowing = []
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        msg = receiver.get(0.3)
        if msg:
            flowing.append(msg)
    assert len(flowing) >= 3 and set(flowing) == {"WATCHDOG=1"}
    assert len(flowing) <= len(frames)  # rate-limited: far fewer pings than frames

    hang.set()
    assert parked.wait(5)  # the loop is stuck now; its last frame_done() is behind it
    time.sleep(0.15)  # a ping possibly in flight when the loop hung
    receiver.drain(0.05)
    assert receiver.get(0.5) is None  # no ping while the pipeline is stuck: systemd would restart us
    stop.set()
    thread.join(2)


def test_alive_keeps_a_waiting_loop_pinged(receiver):
    now = [0.0]
    dog = systemd.Watchdog(interval=1.0, clock=lambda: now[0])
    for _ in range(10):  # camera reconnect backoff, slept in 0.2 s chunks inside the loop
        dog.alive()
        now[0] += 0.2
    assert receiver.drain() == ["WATCHDOG=1"] * 4


def test_a_real_child_process_notifies(receiver):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "from agent import systemd; import sys; sys.exit(0 if systemd.ready('child') else 1)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    assert receiver.get() == "READY=1\nSTATUS=child"


def test_start_up_extends_the_timeout_repeatedly_within_its_budget(receiver):
    """Review point 3: EXTEND_TIMEOUT_USEC is sent again and again while loading (one message would let a
    slow first engine build be killed), and stops at the budget so a hung start still times out."""
    with systemd.extending_start(budget=0.6, step=0.3, every=0.1) as ext:
        time.sleep(1.0)
    messages = receiver.drain(0.2)
    assert len(messages) >= 4 and ext.sent == len(messages), messages
    assert all(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages)
    assert all(int(m.split("=")[1]) <= 300_000 for m in messages)  # never past the budget
    with systemd.extending_start(budget=30, step=60, every=10) as ext:  # ends with the block
        pass
    assert ext.sent <= 1 and len(receiver.drain(0.2)) == ext.sent
    time.sleep(0.1)
    assert receiver.drain(0.1) == []  # the thread ended with the block


def test_extending_start_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with systemd.extending_start(budget=1, step=1, every=0.01) as ext:
        time.sleep(0.05)
    assert ext.sent == 0
