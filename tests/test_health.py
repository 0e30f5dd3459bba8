"""HealthMonitor readings -> ok/degraded, logged once per change; the status file and `face-agent status`."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, make_config

from agent import health
from agent.cli import main
from agent.health import HealthMonitor, read_status, write_status

BIG = 10**12  # MB: more free disk than any machine has


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_all_fine_is_ok(tmp_path):
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, camera_ok=True, broker_connected_since=123.0,
                        outbox_backlog=0, gpu_fallback=False)
    h = mon.check()
    assert h["state"] == "ok" and h["reasons"] == []
    assert h["checks"]["camera_ok"] is True and h["checks"]["outbox_backlog"] == 0
    assert h["checks"]["free_disk_mb"] > 1


def test_each_reading_can_degrade(tmp_path):
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, camera_ok=True, broker_connected_since=1.0,
                        outbox_backlog=0, gpu_fallback=False, max_backlog=100)
    assert mon.check(camera_ok=False)["codes"] == ["camera"]
    assert mon.check(gpu_fallback=True)["codes"] == ["gpu"]
    h = mon.check(outbox_backlog=101)
    assert h["codes"] == ["backlog"] and "101 events" in h["reasons"][0]


def test_low_disk_uses_real_free_space(tmp_path):
    h = HealthMonitor(tmp_path / "not" / "yet" / "created", min_free_disk_mb=BIG).check()
    assert h["state"] == "degraded" and h["codes"] == ["disk"]
    assert "MB free on" in h["reasons"][0] and f"min {BIG}" in h["reasons"][0]


def test_broker_gets_a_grace_period(tmp_path):
    clock = Clock()
    since = [None]
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, broker_grace=30, broker_connected_since=lambda: since[0],
                        clock=clock)
    assert mon.check()["state"] == "ok"  # just dropped: reconnecting
    clock.now += 29
    assert mon.check()["state"] == "ok"
    clock.now += 2
    h = mon.check()
    assert h["codes"] == ["broker"] and "31 s" in h["reasons"][0]
    since[0] = clock.now
    assert mon.check()["state"] == "ok"
    since[0] = None  # a new outage starts a new grace period
    clock.now += 10
    assert mon.check()["state"] == "ok"


def test_broker_ignored_when_mqtt_disabled(tmp_path):
    clock = Clock()
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, mqtt_enabled=False, broker_connected_since=None,
                        outbox_backlog=10**6, clock=clock)
    clock.now += 1000
    assert mon.check()["state"] == "ok"


def test_backlog_growth_while_connected(tmp_path):
    backlog = [0]
    connected = [5.0]
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, backlog_growth_checks=3, max_backlog=10**6,
                        outbox_backlog=lambda: backlog[0], broker_connected_since=lambda: connected[0])
    states = []
    for value in (10, 20, 30, 40):
        backlog[0] = value
        states.append(mon.check()["codes"])
    assert states == [[], [], [], ["backlog_growth"]]
    backlog[0] = 35  # draining again
    assert mon.check()["state"] == "ok"
    connected[0] = None  # while disconnected growth is expected (events queue for the broker)
    for value in (50, 60, 70, 80, 90):
        backlog[0] = value
        assert "backlog_growth" not in mon.check()["codes"]


def test_state_changes_are_logged_once(tmp_path, caplog):
    camera = [True]
    mon = HealthMonitor(tmp_path, min_free_disk_mb=1, camera_ok=lambda: camera[0])
    caplog.set_level(logging.INFO, logger="agent.health")
    mon.check()
    assert caplog.records == []  # starting ok: nothing to say
    camera[0] = False
    for _ in range(5):
        mon.check()
    camera[0] = True
    for _ in range(5):
        mon.check()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [("WARNING", "health degraded: camera: no frames from the source"),
                        ("INFO", "health ok again")]


def test_from_config_and_bad_reading(tmp_path):
    cfg = make_config(tmp_path, service={"min_free_disk_mb": BIG, "max_backlog": 5})
    mon = HealthMonitor.from_config(cfg, outbox_backlog=6)
    assert mon.storage == cfg.path("storage")
    assert mon.check()["codes"] == ["backlog", "disk"]
    with pytest.raises(TypeError, match="camera"):
        mon.check(camera=True)
    assert health.summary({"state": "ok", "reasons": []}) == "ok"
    assert health.summary({"state": "degraded", "reasons": ["a", "b"]}) == "degraded: a; b"


def test_status_file_round_trip(tmp_path):
    path = tmp_path / "storage" / "status.json"
    assert read_status(path) is None
    write_status(path, {"interval": 5.0, "health": {"state": "ok", "reasons": []}, "stats": {"frames": 3}})
    data = read_status(path)
    assert data["format"] == health.STATUS_FORMAT and data["pid"] == os.getpid()
    assert data["stats"] == {"frames": 3} and abs(data["written_at"] - time.time()) < 5
    assert not health.is_stale(data)
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]  # no temporary left over
    path.write_text("{ half a file")
    assert read_status(path) is None
    path.write_text('["not", "a", "status"]')
    assert read_status(path) is None


def test_status_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "status.json"
    write_status(path, {"stats": {"n": 0, "pad": "x" * 50_000}})
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            if read_status(path) is None:
                bad.append(1)

    t = threading.Thread(target=reader)
    t.start()
    for n in range(200):
        write_status(path, {"stats": {"n": n, "pad": "x" * 50_000}})
    stop.set()
    t.join()
    assert bad == [] and read_status(path)["stats"]["n"] == 199


def test_stale_by_age_or_dead_process(tmp_path):
    now = time.time()
    fresh = {"written_at": now - 5, "interval": 10.0, "pid": os.getpid(), "hostname": socket.gethostname()}
    assert not health.is_stale(fresh, now=now)
    assert health.is_stale(dict(fresh, written_at=now - 31), now=now)  # 3 intervals, at least 30 s
    assert health.is_stale(dict(fresh, written_at=now - 170, interval=60.0), now=now) is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert health.is_stale(dict(fresh, pid=child.pid), now=now)  # the writer is gone
    assert not health.is_stale(dict(fresh, pid=child.pid, hostname="elsewhere"), now=now)


def _config_file(tmp_path) -> str:
    path = tmp_path / "agent.toml"
    path.write_text('[paths]\nstorage = "storage"\n[service]\nstatus_interval = 10.0\n')
    return str(path)


def test_status_command(tmp_path, capsys):
    conf = _config_file(tmp_path)
    assert main(["--config", conf, "status"]) == 3
    assert "not running (no status file" in capsys.readouterr().out

    status = tmp_path / "storage" / "status.json"
    started = time.time() - 3725
    write_status(status, {"interval": 10.0, "agent_id": "agent-7", "started_at": started,
                          "health": {"state": "ok", "reasons": [], "checks": {"free_disk_mb": 1234.5}},
                          "stats": {"frames": 1200, "fps": 14.75, "source": {"reconnects": 2}}})
    assert main(["--config", conf, "status"]) == 0
    out = capsys.readouterr().out
    assert "running, ok" in out and "agent-7" in out and "01:02:05" in out and "14.75" in out
    assert re.search(r"source reconnects\s+2", out)

    write_status(status, {"interval": 10.0, "health": {"state": "degraded", "reasons": ["camera: gone"]}})
    assert main(["--config", conf, "status"]) == 1
    assert "! camera: gone" in capsys.readouterr().out

    assert main(["--config", conf, "status", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is True and data["status"]["health"]["state"] == "degraded"

    write_status(status, {"interval": 10.0, "health": {"state": "stopped", "reasons": []}})
    assert main(["--config", conf, "status"]) == 3  # a clean shutdown: the service's last status
    assert "not running: stopped" in capsys.readouterr().out

    write_status(status, {"interval": 10.0, "written_at": time.time() - 600, "health": {"state": "ok"}})
    assert main(["--config", conf, "status"]) == 3
    assert "not running / stale: last status written 10 min ago" in capsys.readouterr().out
    assert main(["--config", conf, "status", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is False and data["stale"] is True and data["age"] >= 600


def test_status_command_in_a_subprocess(tmp_path):
    conf = _config_file(tmp_path)
    write_status(tmp_path / "storage" / "status.json", {"interval": 10.0, "health": {"state": "ok"}})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # the writer (this process) is alive, so a separate `face-agent status` sees a running agent
    run = subprocess.run([sys.executable, "-m", "agent", "--config", conf, "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["running"] is True
