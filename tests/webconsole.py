"""A real `face-agent web` process on a free 127.0.0.1 port, for the console's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from broker import free_port

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp: Path, **sections: dict) -> Path:
    """agent.toml under `tmp`: every state folder inside it, MQTT off; `sections` add or override keys."""
    data = {"paths": {"storage": "storage", "engines": "engines", "svm": "svm", "faces": "faces"},
            "agent": {"id": "web-test", "camera_name": "stage"}, "mqtt": {"enabled": False}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else
                  f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class WebConsole:
    """`face-agent -c CONFIG web --port P`, started and waited for; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, config: Path, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / "web.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(config), "web", "--port",
                                      str(self.port)], cwd=ROOT, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"face-agent web exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("face-agent web did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
