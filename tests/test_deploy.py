"""deploy/: the systemd unit passes `systemd-analyze verify`, install.sh is idempotent and keeps config and
data, and the example mosquitto configuration enforces its ACL on a real broker."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from conftest import ROOT, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import config_as_dict, load_config

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "face-agent.service"
INSTALL = DEPLOY / "install.sh"
HOST_UNITS = Path("/usr/lib/systemd/system")
FAKE_EXE = "#!/bin/sh\nexit 0\n"


# ---------------------------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict:
    """Everything about a tree that an install could change: type, mode, owner, size, mtime, content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            entry = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
            if p.is_symlink():
                entry += (os.readlink(p),)
            elif p.is_file():
                entry += (st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            out[str(p.relative_to(root))] = entry
    return out


def install(root: Path, *args: str, source: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["bash", str(INSTALL), "--root", str(root), "--source", str(source), *args]
    if "--uninstall" not in args and "--venv" not in args:
        cmd.append("--no-venv")
    cmd = [c for c in cmd if c != "--venv"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check:
        assert run.returncode == 0, f"install.sh failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


def systemd_root(tmp: Path) -> Path:
    """A root folder holding the distribution's units (sysinit.target, ...) that verify needs."""
    if not HOST_UNITS.is_dir():
        pytest.skip(f"{HOST_UNITS} missing: install Debian's systemd package (make system-deps)")
    root = tmp / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    return root


def fake_executable(root: Path, prefix: str = "/opt/face-agent") -> None:
    exe = root / prefix.lstrip("/") / "venv/bin/face-agent"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(FAKE_EXE)
    exe.chmod(0o755)


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not found: `apt-get install systemd` (make system-deps / .ci/run do)")
    return tool


def verify(analyze: str, root: Path, unit: str = "face-agent.service") -> subprocess.CompletedProcess:
    return subprocess.run([analyze, f"--root={root}", "--man=no", "--generators=no", "verify", unit],
                          capture_output=True, text=True, timeout=120)


def unit_settings(text: str) -> dict[str, list[str]]:
    """key -> values (keys may repeat, e.g. DeviceAllow) over all sections."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


# ---------------------------------------------------------------------------------------------- the unit


def test_unit_passes_systemd_analyze_verify(analyze, tmp_path):
    root = systemd_root(tmp_path)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/face-agent.service")
    fake_executable(root)
    run = verify(analyze, root)
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr


def test_verify_would_catch_mistakes(analyze, tmp_path):
    """The clean result above means something: the same check flags a broken unit."""
    root = systemd_root(tmp_path)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes\nWatchdogSecs=30")
    (units / "face-agent.service").write_text(broken)
    run = verify(analyze, root)  # no executable either
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "sometimes" in out and "WatchdogSecs" in out and "not executable" in out


def test_unit_has_the_production_settings():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "30s" and one["Restart"] == "on-failure"
    assert one["StartLimitIntervalSec"] and int(one["StartLimitBurst"]) >= 3
    # two TensorRT builds (detector, embedder) on the first start, each bounded by the agent's watchdog:
    # the unit's limit is the agent's own start-up budget (it sends EXTEND_TIMEOUT_USEC within it)
    from agent.systemd import BUILD_TIMEOUT, STARTUP_BUDGET

    assert one["TimeoutStartSec"] == "35min" and STARTUP_BUDGET == 35 * 60 >= 2 * BUILD_TIMEOUT
    assert (one["User"], one["Group"], one["SupplementaryGroups"]) == ("face-agent", "face-agent", "video")
    assert one["ExecStart"] == "/opt/face-agent/venv/bin/face-agent --config /etc/face-agent/agent.toml run"
    assert one["EnvironmentFile"] == "-/etc/face-agent/env"
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("ProtectHome", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
                       ("ReadWritePaths", "/var/lib/face-agent"), ("StateDirectory", "face-agent"),
                       ("DevicePolicy", "closed"),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")]:
        assert one[key] == value, key
    devices = s["DeviceAllow"]
    assert "char-video4linux rw" in devices and "/dev/nvmap rw" in devices
    assert any(d.startswith("/dev/nvhost-") for d in devices) and any(d.startswith("char-nvidia") for d in devices)
    assert one["WantedBy"] == "multi-user.target"


MAX_EXPOSURE = 3.0  # systemd-analyze security: "OK" is below 3.5; the issue asks for 3.0 or less


def test_unit_exposure_score_is_at_most_3(analyze, tmp_path):
    """`systemd-analyze security --offline=true` on the shipped unit: capability bounding set, system-call
    filter, private /dev with the cameras and GPU nodes bound in, ProtectProc, MemoryDenyWriteExecute."""
    run = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    out = run.stdout + run.stderr
    match = re.search(r"Overall exposure level for face-agent\.service: (\d+\.\d+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, out[-4000:]
    one = {k: v[-1] for k, v in unit_settings(UNIT.read_text()).items()}
    assert one["CapabilityBoundingSet"] == "" and one["PrivateDevices"] == "yes"
    assert one["ProtectProc"] == "invisible" and one["MemoryDenyWriteExecute"] == "yes"
    binds = " ".join(unit_settings(UNIT.read_text())["BindPaths"])
    assert "-/dev/video0" in binds and "-/dev/nvmap" in binds and "-/dev/nvhost-ctrl-gpu" in binds


# ---------------------------------------------------------------------------------------------- install.sh


def test_install_twice_changes_nothing_and_the_unit_verifies(analyze, tmp_path):
    root = systemd_root(tmp_path)
    first = install(root)
    assert "not creating user face-agent under --root" in first.stderr
    fake_executable(root)  # --no-venv: the code comes from elsewhere in this test
    for rel in ("etc/systemd/system/face-agent.service", "etc/face-agent/agent.toml", "etc/face-agent/env",
                "usr/lib/sysusers.d/face-agent.conf", "opt/face-agent/share/README.md"):
        assert (root / rel).is_file(), rel
    for sub in ("storage", "engines", "svm", "faces"):
        assert (root / "var/lib/face-agent" / sub).is_dir()
    wants = root / "etc/systemd/system/multi-user.target.wants/face-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/face-agent.service"  # enabled offline
    assert stat.S_IMODE((root / "etc/face-agent/env").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/face-agent/agent.toml").stat().st_mode) == 0o640

    run = verify(analyze, root)
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr

    before = snapshot(root)
    time.sleep(0.01)  # any rewrite would show in the mtimes
    second = install(root)
    assert snapshot(root) == before
    assert "wrote" not in second.stdout and "created" not in second.stdout


def test_installed_config_points_into_var_lib(tmp_path):
    root = tmp_path / "root"
    install(root)
    cfg = load_config(root / "etc/face-agent/agent.toml")
    for key in ("storage", "engines", "svm", "faces"):
        assert cfg.path(key) == Path("/var/lib/face-agent") / key
    installed, shipped = config_as_dict(cfg), config_as_dict(load_config(ROOT / "agent.toml"))
    installed.pop("paths"), shipped.pop("paths")
    assert installed == shipped  # only [paths] differ from the repository's agent.toml
    # comments survive: the installed file documents itself like the shipped one
    assert (root / "etc/face-agent/agent.toml").read_text().count("#") == (ROOT / "agent.toml").read_text().count("#")


def copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("agent.toml", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(DEPLOY, dest / "deploy")
    return dest


def test_upgrade_keeps_the_config_and_writes_new_default_beside_it(tmp_path):
    root = tmp_path / "root"
    source = copy_source(tmp_path / "src")
    install(root, source=source)
    conf = root / "etc/face-agent/agent.toml"
    mine = conf.read_text().replace('uri = "0"', 'uri = "rtsp://cam.lan/stream"')
    conf.write_text(mine)

    install(root, source=source)  # same shipped default: nothing to say
    assert conf.read_text() == mine and not (root / "etc/face-agent/agent.toml.new").exists()

    shipped = source / "agent.toml"  # the next release changes a default
    shipped.write_text(shipped.read_text().replace("max_missed = 15 ", "max_missed = 16 "))
    run = install(root, source=source)
    new = root / "etc/face-agent/agent.toml.new"
    assert conf.read_text() == mine  # kept
    assert "max_missed = 16" in new.read_text() and "/var/lib/face-agent/storage" in new.read_text()
    assert "agent.toml.new" in run.stdout
    assert (root / "etc/face-agent/agent.toml.dist").read_text() == new.read_text()

    before = snapshot(root)
    install(root, source=source)
    assert snapshot(root) == before


def test_prefix_is_followed_by_the_unit(tmp_path):
    root = tmp_path / "root"
    install(root, "--prefix", "/srv/fa")
    unit = (root / "etc/systemd/system/face-agent.service").read_text()
    assert "ExecStart=/srv/fa/venv/bin/face-agent --config /etc/face-agent/agent.toml run" in unit
    assert "/opt/face-agent" not in unit
    assert (root / "srv/fa/share/README.md").is_file()


def test_prefix_with_spaces_or_specials_is_refused(tmp_path):
    for prefix in ("/opt/a b", "/opt/a%b", "/opt/a#b", "/opt/a\tb"):
        run = install(tmp_path / "root", "--prefix", prefix, check=False)
        assert run.returncode == 2 and "--prefix" in run.stderr, (prefix, run.stderr)
        assert not (tmp_path / "root/etc/systemd/system/face-agent.service").exists()


def test_root_image_gives_the_service_user_its_config_at_first_boot(tmp_path):
    """`--root` cannot chown to a user the image does not have yet: at the target's boot systemd-sysusers
    creates it and systemd-tmpfiles gives it the config (0750 root:face-agent, agent.toml 0640)."""
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found: `apt-get install systemd`")
    root = tmp_path / "root"
    install(root)
    (root / "etc").mkdir(exist_ok=True)
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True, timeout=60)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create"], check=True, capture_output=True,
                   timeout=60)
    gid = next(int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines()
               if line.startswith("face-agent:"))
    for rel, mode in (("etc/face-agent", 0o750), ("etc/face-agent/agent.toml", 0o640),
                      ("etc/face-agent/agent.toml.dist", 0o640)):
        st = (root / rel).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, mode), rel
    env = (root / "etc/face-agent/env").stat()
    assert (env.st_uid, env.st_gid, stat.S_IMODE(env.st_mode)) == (0, 0, 0o600)  # secrets stay root's
    # installing again into the image that now has the group changes nothing
    before = snapshot(root)
    install(root)
    assert snapshot(root) == before


def test_uninstall_keeps_data_and_purge_removes_it(tmp_path):
    root = tmp_path / "root"
    install(root)
    fake_executable(root)
    events = root / "var/lib/face-agent/storage/events.db"
    events.write_bytes(b"precious")
    conf = root / "etc/face-agent/agent.toml"
    conf.write_text(conf.read_text() + "\n# edited by the operator\n")

    run = install(root, "--uninstall")
    assert "kept /etc/face-agent" in run.stdout
    for gone in ("etc/systemd/system/face-agent.service", "opt/face-agent", "usr/lib/sysusers.d/face-agent.conf",
                 "usr/lib/tmpfiles.d/face-agent.conf",
                 "etc/systemd/system/multi-user.target.wants/face-agent.service"):
        assert not os.path.lexists(root / gone), gone
    assert events.read_bytes() == b"precious" and "edited by the operator" in conf.read_text()

    install(root)  # reinstalling picks the kept config and data up again
    assert events.read_bytes() == b"precious" and "edited by the operator" in conf.read_text()

    install(root, "--uninstall", "--purge")
    for gone in ("var/lib/face-agent", "etc/face-agent", "opt/face-agent", "etc/systemd/system/face-agent.service"):
        assert not (root / gone).exists(), gone
    assert (root / "etc/systemd/system").is_dir() and (root / "var/lib").is_dir()  # only our own folders go


def test_bad_options_are_refused(tmp_path):
    run = install(tmp_path / "root", "--purge", check=False)
    assert run.returncode == 2 and "--purge only goes with --uninstall" in run.stderr
    run = install(tmp_path / "root", "--frobnicate", check=False)
    assert run.returncode == 2 and "unknown option --frobnicate" in run.stderr
    run = install(tmp_path / "root", "--prefix", "/", check=False)
    assert run.returncode == 2
    run = install(tmp_path / "root", source=tmp_path, check=False)
    assert run.returncode == 2 and "does not look like a face-agent checkout" in run.stderr


LIVE_SCRIPT = r"""
set -euo pipefail
for d in etc opt var usr; do  # the real system stays untouched: every write lands in $UPPER
  mkdir -p "$UPPER/$d-up" "$UPPER/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$UPPER/$d-up,workdir=$UPPER/$d-work" "/$d"
done
mkdir -p /opt/face-agent/venv/bin
printf '#!/bin/sh\necho "fake face-agent as $(id -un): $*"\n' > /opt/face-agent/venv/bin/face-agent
chmod 755 /opt/face-agent/venv/bin/face-agent
state() { find /etc/face-agent /var/lib/face-agent /opt/face-agent /etc/systemd/system /usr/lib/sysusers.d \
            -printf '%M %u:%g %T@ %p %l\n' | sort; getent passwd face-agent; id -nG face-agent; }
bash "$INSTALL" --no-venv
echo "=== user: $(id -nG face-agent)"
echo "=== owners: $(stat -c '%n=%U:%G:%a' /var/lib/face-agent /var/lib/face-agent/storage /etc/face-agent \
                    /etc/face-agent/agent.toml /etc/face-agent/env | tr '\n' ' ')"
state > "$UPPER/before"
bash "$INSTALL" --no-venv
state > "$UPPER/after"
cmp "$UPPER/before" "$UPPER/after" && echo "=== second run changed nothing"
bash "$INSTALL" --uninstall
id face-agent >/dev/null && [ -d /var/lib/face-agent/storage ] && echo "=== uninstall kept user and data"
bash "$INSTALL" --uninstall --purge
id face-agent >/dev/null 2>&1 || echo "=== purge removed the user"
"""


def test_live_install_in_a_private_mount_namespace(tmp_path):
    """The path an operator takes on a real machine (root is /): user creation, ownership, the config
    check as the service user, idempotence, uninstall and purge. /etc, /opt, /var and /usr are overlays
    in a private mount namespace, so the machine running the tests is not changed."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to install into / inside a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.decode().strip()}")
    upper = tmp_path / "upper"
    upper.mkdir()
    run = subprocess.run(["unshare", "-m", "bash", "-c", LIVE_SCRIPT], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, UPPER=str(upper), INSTALL=str(INSTALL)))
    out = run.stdout + run.stderr
    if "overlay" in run.stderr and "mount" in run.stderr and "=== user" not in out:
        pytest.skip(f"overlay mounts unavailable: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, out
    assert "created system user face-agent" in out
    assert "=== user: face-agent video" in out
    owners = next(line for line in out.splitlines() if line.startswith("=== owners:"))
    for expected in ("/var/lib/face-agent=face-agent:face-agent:750",
                     "/var/lib/face-agent/storage=face-agent:face-agent:750", "/etc/face-agent=root:face-agent:750",
                     "/etc/face-agent/agent.toml=root:face-agent:640", "/etc/face-agent/env=root:root:600"):
        assert expected in owners, owners
    assert "fake face-agent as face-agent: --config /etc/face-agent/agent.toml config check" in out
    assert "=== second run changed nothing" in out
    assert "=== uninstall kept user and data" in out and "=== purge removed the user" in out
    assert subprocess.run(["getent", "passwd", "face-agent"], capture_output=True).returncode != 0  # host untouched


@pytest.mark.slow
def test_real_venv_install(tmp_path):
    """The full path an operator takes: a venv under the prefix with pip installing the checkout (needs
    PyPI or a pip mirror; ~30 s). A second run reuses it."""
    if not (ROOT / "README.md").is_file():
        pytest.skip("README.md missing: pyproject.toml's readme is needed to build the package")
    source = copy_source(tmp_path / "src")  # a frozen copy: the checkout may change while this runs
    shutil.copy(ROOT / "README.md", source / "README.md")
    shutil.copytree(ROOT / "agent", source / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "root"
    python = shutil.which("python3") or sys.executable
    install(root, "--venv", "--python", python, source=source)
    exe = root / "opt/face-agent/venv/bin/face-agent"
    run = subprocess.run([str(exe), "--config", str(root / "etc/face-agent/agent.toml"), "config", "show",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert '"/var/lib/face-agent/storage"' in run.stdout
    before = snapshot(root)
    second = install(root, "--venv", "--python", python, source=source)
    assert "installed face-agent" not in second.stdout
    assert snapshot(root) == before


# ---------------------------------------------------------------------------------------------- mosquitto


class Client:
    """A paho client logged in as one user, recording what it receives and what the broker acknowledged."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.suback: list = []
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.suback.extend(codes)
        self.puback: dict[int, object] = {}
        self.c.on_publish = lambda c, u, mid, rc, p: self.puback.__setitem__(mid, rc)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def subscribe(self, topic: str):
        n = len(self.suback)
        self.c.subscribe(topic, qos=1)
        wait_for(lambda: len(self.suback) > n, 5.0)
        return self.suback[-1]

    def publish(self, topic: str, payload: bytes):
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.puback, 5.0)
        return self.puback[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_mosquitto_example_enforces_the_acl(tmp_path, mosquitto_factory):
    """deploy/mosquitto/mosquitto.conf + acl on a real broker: each side gets exactly its topics."""
    users = {"agent-1": "pw-agent", "operator": "pw-op", "homeassistant": "pw-ha"}
    broker = mosquitto_factory("acl-broker", users=users)  # writes the password file, picks a port
    conf = []
    for line in (DEPLOY / "mosquitto/mosquitto.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "password_file":
            line = f"password_file {broker.folder / 'passwd'}"
        elif key == "acl_file":
            line = f"acl_file {DEPLOY / 'mosquitto/acl'}"
        elif key == "listener":
            line = f"listener {broker.port} 127.0.0.1"
        elif key == "#persistence_location":
            line = f"persistence_location {broker.data_dir}/"
        conf.append(line)
    conf += ["user root", f"log_dest file {broker.log_path}", "log_type all"]
    broker.conf_path.write_text("\n".join(conf) + "\n")
    broker.start()

    agent, op = Client(broker.port, "agent-1", "pw-agent"), Client(broker.port, "operator", "pw-op")
    ha = Client(broker.port, "homeassistant", "pw-ha")
    try:
        # Mosquitto grants any subscription and applies "read" when delivering: all listen to everything
        for c in (agent, op, ha):
            c.subscribe("#")
        sent = {  # topic -> who publishes it (all allowed)
            "faces/events": agent, "faces/agent-1/status": agent, "faces/agent-1/stats": agent,
            "faces/agent-1/enroll/result": agent, "faces/replies/operator-laptop": agent,
            "faces/agent-1/ha/recognition": agent, "homeassistant/event/face_agent_agent-1/recognition/config": agent,
            "faces/enroll": op, "faces/agent-1/enroll": op, "faces/agent-2/enroll": op,
            "homeassistant/status": ha,
        }
        for topic, client in sent.items():
            assert not client.publish(topic, b"ok").is_failure, topic
        refused = [(agent, "faces/agent-2/status"), (agent, "faces/enroll"), (agent, "faces/agent-1/enroll"),
                   (agent, "homeassistant/status"), (agent, "homeassistant/sensor/face_agent_agent-2/x/config"),
                   (op, "faces/events"), (op, "faces/agent-1/status"), (op, "faces/agent-1/enroll/result"),
                   (op, "homeassistant/status"), (ha, "faces/enroll"), (ha, "faces/events")]
        for client, topic in refused:
            assert client.publish(topic, b"forged").is_failure, topic  # PUBACK: not authorized

        expected = {
            op: ["faces/events", "faces/agent-1/status", "faces/agent-1/stats", "faces/agent-1/enroll/result",
                 "faces/replies/operator-laptop"],
            agent: ["faces/enroll", "faces/agent-1/enroll", "homeassistant/status"],
            ha: ["faces/agent-1/status", "faces/agent-1/ha/recognition", "homeassistant/status",
                 "homeassistant/event/face_agent_agent-1/recognition/config"],
        }
        assert wait_for(lambda: all(len(c.received) >= len(t) for c, t in expected.items()), 5.0)
        time.sleep(0.3)  # anything that should not arrive would have arrived by now
        for client, topics in expected.items():
            assert sorted(t for t, _ in client.received) == sorted(topics)
            assert all(p == b"ok" for _, p in client.received)
    finally:
        for c in (agent, op, ha):
            c.close()


# ------------------------------------------------------------------------------ install.sh on a Jetson (aarch64)


def _install_function(name: str) -> str:
    """One shell function of install.sh, as text (to run it alone)."""
    text = INSTALL.read_text()
    start = text.index(f"{name}() {{")
    return text[start:text.index("\n}\n", start) + 3]


def _wrapper(path: Path, python: str, *extra: Path) -> Path:
    """An executable `python` that runs `python` with `extra` appended to PYTHONPATH (fake site folders)."""
    add = f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{":".join(map(str, extra))}" ' if extra else ""
    path.write_text(f'#!/bin/sh\n{add}exec {python} "$@"\n')
    path.chmod(0o755)
    return path


def test_jetpack_opencv_is_probed_with_the_venvs_numpy_before_anything_is_removed(tmp_path):
    """Review point 1: JetPack's cv2 (built against numpy 1.x) is imported by the venv's python with the
    venv's numpy before pip's OpenCV is removed; with numpy 2 the probe fails ("_ARRAY_API not found"), so
    install.sh pins numpy<2 first and removes nothing until the probe passes."""
    system = tmp_path / "system-site"
    (system / "cv2").mkdir(parents=True)
    # JetPack's OpenCV as it behaves: its import fails under numpy 2, it has GStreamer
    (system / "cv2" / "__init__.py").write_text(
        "import numpy\n"
        "if int(numpy.__version__.split('.')[0]) >= 2:\n"
        "    raise ImportError('numpy.core.multiarray failed to import (_ARRAY_API not found)')\n"
        "def getBuildInformation():\n    return '  Video I/O:\\n    GStreamer:                   YES (1.20.3)\\n'\n")
    numpy1 = tmp_path / "numpy1"
    (numpy1 / "numpy").mkdir(parents=True)
    (numpy1 / "numpy" / "__init__.py").write_text("__version__ = '1.26.4'\n")
    system_python = _wrapper(tmp_path / "system-python", sys.executable, system, numpy1)  # JetPack: numpy 1.x
    venv2 = _wrapper(tmp_path / "venv2-python", sys.executable)  # this venv: numpy 2
    venv1 = _wrapper(tmp_path / "venv1-python", sys.executable, numpy1)  # after `pip install "numpy<2"`
    script = (_install_function("has_gstreamer") + _install_function("system_cv2_in_venv")
              + 'system_cv2_in_venv "$1" && echo works || echo fails\n')
    import numpy

    assert int(numpy.__version__.split(".")[0]) >= 2, "this test needs numpy 2 in the test venv"
    for venv, expected in ((venv2, "fails"), (venv1, "works")):
        run = subprocess.run(["bash", "-c", script, "probe", str(venv)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHON=str(system_python), TMP=str(tmp_path / "t")), timeout=60)
        assert run.stdout.strip() == expected, (venv, run.stdout, run.stderr)
    # and in the script: the probe, then numpy<2, then the probe again, and only then the uninstall
    text = INSTALL.read_text()
    probe = text.index('if ! system_cv2_in_venv "$py"; then')
    pin = text.index('pip install -q "numpy<2"')
    again = text.index('system_cv2_in_venv "$py" \\', pin)
    uninstall = text.index("pip uninstall -q -y opencv-python-headless")
    assert probe < pin < again < uninstall


def test_install_builds_engines_before_it_starts_the_service_and_installs_pycuda():
    """Review points 2, 3, 7: pycuda is built against /usr/local/cuda with CUDA_ROOT and PATH set (sudo resets
    PATH); the engines are built before the service starts (never two builds at once on a 4 GB board) and
    a failed build does not abort the install; dlib is built without CUDA, explicitly."""
    text = INSTALL.read_text()
    assert 'CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"' in text
    assert 'CUDA_ROOT="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH"' in text
    assert "import pycuda.driver" in text
    build = text.index("engines build")
    assert build < text.index('systemctl start --no-block "$NAME.service"')
    assert build < text.index('systemctl restart --no-block "$NAME.service"')
    assert "|| warn \"building the TensorRT engines failed" in text
    assert "--no DLIB_USE_CUDA" in text and "dlib.DLIB_USE_CUDA" in text
