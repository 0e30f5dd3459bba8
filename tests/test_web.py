"""The web console's guard over HTTP, against a real `face-agent web` process: loopback without a login, the
login when a password is set, CSRF on every change, upload limits, files only from the agent's folders."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from webconsole import ROOT, WebConsole, write_config

from agent.config import config_as_dict, config_from_dict
from agent.web.security import Logins, check_hash_format, hash_password, is_loopback, safe_file, verify_password

PASSWORD = "correct horse battery"


class Client:
    """http.client with one cookie jar; never follows redirects (the tests look at them)."""

    def __init__(self, console: WebConsole) -> None:
        self.port = console.port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None
                ) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for value in resp.headers.get_all("set-cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text

    def csrf(self, path: str = "/login") -> str:
        _, _, text = self.request("GET", path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', text) or re.search(r'"X-CSRF-Token": "([^"]+)"', text)
        return found.group(1)

    def login(self, password: str = PASSWORD) -> int:
        token = self.csrf("/login")
        body = f"password={password.replace(' ', '+')}&csrf_token={token}"
        status, _, _ = self.request("POST", "/login", body,
                                    {"Content-Type": "application/x-www-form-urlencoded"})
        return status


@pytest.fixture
def open_console(tmp_path):
    console = WebConsole(write_config(tmp_path))
    yield console
    console.stop()


@pytest.fixture
def locked_console(tmp_path):
    person = tmp_path / "faces" / "train" / "raw" / "ada"
    person.mkdir(parents=True)
    (person / "a.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    console = WebConsole(write_config(tmp_path, web={"password_hash": hash_password(PASSWORD),
                                                     "max_upload_bytes": 200_000, "max_upload_files": 2}))
    yield console
    console.stop()


def test_password_hash_round_trip_and_format():
    stored = hash_password("s3cret")
    check_hash_format(stored)
    assert verify_password("s3cret", stored) and not verify_password("s3cret ", stored)
    assert not verify_password("x", "not a hash")
    with pytest.raises(ValueError):
        check_hash_format("plain-password")
    with pytest.raises(ValueError):
        hash_password("")


def test_loopback_and_safe_file(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    (tmp_path / "root" / "p").mkdir(parents=True)
    (tmp_path / "root" / "p" / "x.png").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (tmp_path / "root" / "p" / "link.png").symlink_to(tmp_path / "outside.png")
    root = tmp_path / "root"
    assert safe_file(root, "p", "x.png") == (root / "p" / "x.png").resolve()
    for parts in (("..", "outside.png"), ("p", "../../outside.png"), ("p", "link.png"), ("p", ".x.png"),
                  ("p", ""), ("p", "missing.png"), ("/etc", "passwd")):
        assert safe_file(root, *parts) is None, parts


def test_password_hash_from_the_environment_is_masked():
    cfg = config_from_dict({}, env={"FACE_AGENT_WEB_PASSWORD_HASH": hash_password("x")})
    assert cfg.web.password_hash.startswith("scrypt$")
    assert config_as_dict(cfg)["web"]["password_hash"] == "********"


def test_other_addresses_need_a_password(tmp_path):
    config = write_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "agent", "-c", str(config), "web", "--host", "0.0.0.0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "password_hash" in done.stderr
    config = write_config(tmp_path, web={"password_hash": "hunter2"})  # a plain password pasted by mistake
    done = subprocess.run([sys.executable, "-m", "agent", "-c", str(config), "web"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--hash-password" in done.stderr
    done = subprocess.run([sys.executable, "-m", "agent", "web", "--hash-password"], cwd=ROOT, input="pw\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and verify_password("pw", done.stdout.strip())


def test_loopback_console_without_login_still_checks_csrf_and_host(open_console):
    client = Client(open_console)
    for path in ("/live", "/events", "/people", "/unknowns", "/live/panel"):
        status, headers, _ = client.request("GET", path)
        assert status == 200, path
        assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert client.request("POST", "/people/retrain")[0] == 403  # no CSRF token
    assert client.request("POST", "/people/retrain", headers={"X-CSRF-Token": "forged"})[0] == 403
    token = client.csrf("/people")
    assert client.request("POST", "/people/retrain", headers={"X-CSRF-Token": token})[0] == 204
    # a page of another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused
    assert client.request("GET", "/people", headers={"Host": "evil.example:80"})[0] == 400


def test_nothing_without_the_login(locked_console):
    client = Client(locked_console)
    for path in ("/", "/live", "/live/panel", "/events", "/people", "/people/ada", "/unknowns",
                 "/files/photo/ada/a.jpg", "/files/chip/ada/a.png", "/files/live/live.jpg", "/reports",
                 "/files/report/tune.png", "/events/01M8M3ATTSS776S3QMMFD5038S/faces", "/unknowns?show=ignored"):
        status, headers, _ = client.request("GET", path)
        # the login form, keeping the page that was asked for (back there after the login)
        assert status == 303 and headers["location"] == ("/login" if path == "/" else
                                                         "/login?" + urlencode({"next": path})), path
        assert client.request("GET", path, headers={"HX-Request": "true"})[0] == 401, path
    for path in ("/people/upload", "/people/retrain", "/people/ada/forget", "/people/ada/rename", "/logout",
                 "/unknowns/u1/merge", "/unknowns/u1/ignore", "/unknowns/u1/unignore", "/reports/tune"):
        assert client.request("POST", path, headers={"X-CSRF-Token": client.csrf()})[0] == 401, path
    assert client.request("GET", "/static/htmx.min.js")[0] == 200  # the package's own script, no data
    assert client.login("wrong password") == 401
    assert client.request("GET", "/people")[0] == 303
    # the login form needs its CSRF token too
    status, _, _ = client.request("POST", "/login", f"password={PASSWORD}",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403


def test_the_login_returns_to_the_page_asked_for_on_this_site_only(locked_console):
    for asked, lands in (("/unknowns?show=ignored", "/unknowns?show=ignored"), ("/people/ada", "/people/ada"),
                         ("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/")):
        client = Client(locked_console)
        token = client.csrf("/login?" + urlencode({"next": asked}))
        body = urlencode({"csrf_token": token, "password": PASSWORD, "next": asked})
        status, headers, _ = client.request("POST", "/login", body,
                                            {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303 and headers["location"] == lands, asked


def test_after_login_files_only_from_the_agents_folders(locked_console):
    client = Client(locked_console)
    assert client.login() == 303
    assert client.request("GET", "/people")[0] == 200
    status, headers, _ = client.request("GET", "/files/photo/ada/a.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    for path in ("/files/photo/ada/..%2F..%2F..%2Fsecret.jpg", "/files/photo/../secret.jpg",
                 "/files/photo/ada/%2e%2e/%2e%2e/%2e%2e/secret.jpg", "/files/chip/ada/../../raw/ada/a.jpg",
                 "/files/storage/events.db", "/files/live/events.db", "/files/photo/ada", "/files/photo/%2Fetc/passwd"):
        assert client.request("GET", path)[0] in (404, 307), path
    token = client.csrf("/people")
    status, _, text = client.request("POST", "/people/upload", b"x" * 2_000_000, {
        "X-CSRF-Token": token, "Content-Type": "multipart/form-data; boundary=b"})
    assert status == 413 and "larger than" in text
    # a session ends with logout, on the server too: the old cookie, replayed, no longer works
    old_cookies = dict(client.cookies)
    assert client.request("POST", "/logout", headers={"X-CSRF-Token": token})[0] == 204
    assert client.request("GET", "/people")[0] == 303
    client.cookies = old_cookies
    assert client.request("GET", "/people")[0] == 303


def test_logins_expire():
    now = [1000.0]
    logins = Logins(60, clock=lambda: now[0])
    first = logins.start()
    assert logins.valid(first) and not logins.valid("forged") and not logins.valid(True)
    now[0] += 61
    assert not logins.valid(first)
    second = logins.start()
    logins.end(second)
    assert not logins.valid(second)


def test_the_optional_unit_passes_systemd_analyze_verify(tmp_path):
    import shutil

    from test_deploy import FAKE_EXE, systemd_root, verify

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not found: `apt-get install systemd` (make system-deps / .ci/run do)")
    root = systemd_root(tmp_path)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "face-agent-web.service", root / "etc/systemd/system/face-agent-web.service")
    exe = root / "opt/face-agent/venv/bin/face-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_EXE)
    exe.chmod(0o755)
    run = verify(analyze, root, "face-agent-web.service")
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "face-agent-test-boundary"
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for filename, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_uploads_keep_the_gallerys_caps(tmp_path):
    """Too many files, a file over the byte cap, a picture over the pixel cap, not an image: refused, each
    with its reason, and nothing is stored."""
    import io

    from PIL import Image

    big = io.BytesIO()
    Image.new("L", (1500, 1500)).save(big, "PNG")  # 2.25 Mpx in a few kB: over [images] max_pixels below
    console = WebConsole(write_config(tmp_path, images={"max_pixels": 1_000_000},
                                      web={"max_upload_bytes": 50_000, "max_upload_files": 3}))
    try:
        client = Client(console)
        token = client.csrf("/people")
        body, kind = multipart({"person": "ada"}, [("a.jpg", b"x")] * 4)
        status, _, _ = client.request("POST", "/people/upload", body, {"X-CSRF-Token": token, "Content-Type": kind})
        assert status == 400  # more files than [web] max_upload_files
        files = [("bomb.png", big.getvalue()), ("large.jpg", b"\xff\xd8" + b"x" * 60_000), ("text.jpg", b"hello")]
        body, kind = multipart({"person": "ada"}, files)
        status, headers, _ = client.request("POST", "/people/upload", body,
                                            {"X-CSRF-Token": token, "Content-Type": kind})
        assert status == 204 and headers["hx-redirect"] == "/people"  # nothing accepted
        _, _, text = client.request("GET", "/people")
        for name in ("bomb.png", "large.jpg", "text.jpg"):
            assert f"{name}: refused" in text
        assert "pixels" in text and "Nobody is enrolled yet" in text
        assert not list((tmp_path / "faces").rglob("*.*"))
        body, kind = multipart({"person": "../x"}, [("a.jpg", b"x")])
        status, _, text = client.request("POST", "/people/upload", body, {"X-CSRF-Token": token, "Content-Type": kind})
        assert status == 400 and "name" in text
    finally:
        console.stop()


def test_name_and_reject_need_csrf_and_say_why_they_cannot(tmp_path):
    """The sightings actions refuse without the CSRF token; with it, their errors are agent.naming's own:
    an identification whose faces were not kept (privacy "unknown", the default) cannot be rejected."""
    from agent.config import load_config
    from agent.events import EventFactory
    from agent.store import EventStore

    config = write_config(tmp_path)
    cfg = load_config(config)
    event = EventFactory.from_config(cfg).identified(4, "ada", 0.9, 3, (10, 10, 60, 60), (640, 360))
    with EventStore(cfg) as store:
        store.add(event)
    console = WebConsole(config)
    try:
        client = Client(console)
        assert client.request("POST", f"/events/{event.event_id}/reject")[0] == 403
        assert client.request("POST", "/unknowns/u1/name", "person=bob")[0] == 403
        token = client.csrf("/events")
        _, _, page = client.request("GET", "/events/log")
        assert f"/events/{event.event_id}/reject" in page and "That was not ada" in page
        form = {"X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
        status, _, text = client.request("POST", f"/events/{event.event_id}/reject", headers=form)
        assert status == 400 and "no faces of track 4" in text and "privacy = 'unknown'" in text
        status, _, text = client.request("POST", "/events/NOSUCHEVENT/reject", headers=form)
        assert status == 400 and "no event" in text
        status, _, text = client.request("POST", "/unknowns/u1/name", "person=bob", headers=form)
        assert status == 400 and "no unknown person u1" in text
        status, _, text = client.request("GET", "/unknowns")
        assert status == 200 and "No unknown people seen yet" in text
        assert client.request("GET", "/files/sighting/../sightings.db")[0] == 404
    finally:
        console.stop()


def test_merge_ignore_and_tune_need_csrf_and_say_why_they_cannot(tmp_path):
    """The new unknown-people actions and "run tune" refuse without the CSRF token; with it, their errors are
    agent.naming's own. The Events page links nothing for a track with no kept faces; the track page says why.
    Report plots are served only by their own names from [evaluation] reports."""
    from agent.config import load_config
    from agent.events import EventFactory
    from agent.store import EventStore

    config = write_config(tmp_path)
    cfg = load_config(config)
    event = EventFactory.from_config(cfg).unknown_face(4, 3, (10, 10, 60, 60), (640, 360), unknown_id="u9")
    with EventStore(cfg) as store:
        store.add(event)
    reports = tmp_path / "storage" / "reports"
    reports.mkdir(parents=True)
    (reports / "tune.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a plot")
    (reports / "tune.txt").write_text("face-agent tune: 2 people\n<script>x</script>")
    (reports / "other.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "storage" / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    console = WebConsole(config)
    try:
        client = Client(console)
        for path in ("/unknowns/u1/merge", "/unknowns/u1/ignore", "/unknowns/u1/unignore", "/reports/tune"):
            assert client.request("POST", path, "into=u2")[0] == 403, path
        token = client.csrf("/unknowns")
        form = {"X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
        status, _, text = client.request("POST", "/unknowns/u1/merge", "into=u2", headers=form)
        assert status == 400 and "no unknown person u1" in text
        status, _, text = client.request("POST", "/unknowns/x/ignore", headers=form)
        assert status == 400 and "not an unknown person's id" in text
        status, _, text = client.request("POST", "/reports/tune", headers=form)
        assert status == 400 and "nobody is enrolled" in text
        status, _, page = client.request("GET", "/unknowns?show=ignored")
        assert status == 200 and "No ignored unknown people" in page
        # the event names a cluster that no longer exists and kept no faces: no links
        _, _, page = client.request("GET", "/events/log")
        assert f"/events/{event.event_id}/faces" not in page and "#cluster-u9" not in page
        status, _, page = client.request("GET", f"/events/{event.event_id}/faces")
        assert status == 200 and "No faces of this track were kept" in page and 'privacy = "unknown"' in page
        assert client.request("GET", "/events/NOSUCHEVENT/faces")[0] == 404
        # the last reports: text escaped, the plot by its own name only
        status, _, page = client.request("GET", "/reports")
        assert status == 200 and "face-agent tune: 2 people" in page and "&lt;script&gt;" in page
        assert '/files/report/tune.png' in page
        status, headers, _ = client.request("GET", "/files/report/tune.png")
        assert status == 200 and headers["content-type"] == "image/png"
        for path in ("/files/report/other.png", "/files/report/..%2Fsecret.png", "/files/report/../secret.png",
                     "/files/report/tune.txt", "/files/report/reports/tune.png"):
            assert client.request("GET", path)[0] in (404, 307), path
    finally:
        console.stop()


def test_live_page_shows_each_camera_and_serves_only_their_live_frames(tmp_path):
    """Several cameras: one live frame each (live-<camera>.jpg), each shown on the Live page with its own
    figures; live.jpg (or any other file name) is not served."""
    config = write_config(tmp_path)
    with open(config, "a", encoding="utf-8") as f:
        f.write('[[sources]]\nname = "front door"\nuri = "rtsp://a/1"\n[[sources]]\nname = "garden"\nuri = "rtsp://b/1"\n')
    storage = tmp_path / "storage"
    storage.mkdir()
    for name in ("live-front_door.jpg", "live-garden.jpg", "live.jpg"):
        (storage / name).write_bytes(b"\xff\xd8" + name.encode())
    console = WebConsole(config)
    try:
        client = Client(console)
        status, _, page = client.request("GET", "/live/panel")
        assert status == 200 and "front door" in page and "garden" in page
        assert "/files/live/live-front_door.jpg?v=" in page and "/files/live/live-garden.jpg?v=" in page
        status, _, body = client.request("GET", "/files/live/live-garden.jpg")
        assert status == 200 and body.endswith("live-garden.jpg")
        for path in ("/files/live/live.jpg", "/files/live/live-kitchen.jpg", "/files/live/..%2Flive-garden.jpg"):
            assert client.request("GET", path)[0] == 404, path
    finally:
        console.stop()


def test_a_corrupt_sightings_file_does_not_break_the_unknown_people_page(tmp_path):
    """Issue 25.1: the console's /unknowns answered 500 on a damaged sightings.db; it is checked (and moved
    aside, kept) when the console opens it, and the page works."""
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "sightings.db").write_bytes(b"this is no SQLite file\n" * 500)
    console = WebConsole(write_config(tmp_path))
    try:
        status, _, text = Client(console).request("GET", "/unknowns")
        assert status == 200, text[-2000:]
    finally:
        console.stop()
    assert [p.name.split("-")[0] for p in storage.glob("sightings.db.corrupt-*")] == ["sightings.db.corrupt"]


def test_login_throttle_locks_out_a_guessing_client_and_bounds_all_checks():
    import asyncio

    from agent.web.security import CHECKS_AT_ONCE, MAX_LOCKOUT, MAX_WAITING, LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(max_failures=3, lockout=10.0, checks_per_minute=1000, clock=lambda: now[0])
    assert [throttle.failed("a") for _ in range(3)] == [0.0, 0.0, 10.0]
    assert throttle.refused("a") == 10.0 and throttle.refused("b") == 0.0  # one client only
    now[0] += 10.0
    assert throttle.refused("a") == 0.0 and throttle.failed("a") == 20.0  # each further failure doubles it
    assert max(throttle.failed("a") for _ in range(30)) == MAX_LOCKOUT
    throttle.succeeded("a")
    assert throttle.refused("a") == 0.0 and throttle.failed("a") == 0.0

    overall = LoginThrottle(checks_per_minute=2, clock=lambda: now[0])

    async def burst(n: int) -> list[bool]:
        running = peak = 0

        async def one() -> bool:
            nonlocal running, peak
            async with overall.check() as slot:
                if slot:
                    running += 1
                    peak = max(peak, running)
                    await asyncio.sleep(0.01)
                    running -= 1
                return slot

        got = await asyncio.gather(*(one() for _ in range(n)))
        assert peak == CHECKS_AT_ONCE
        return got

    assert sum(asyncio.run(burst(40))) == CHECKS_AT_ONCE + MAX_WAITING  # the rest refused without a check
    assert overall.refused("c") > 0  # 9 checks this minute: over 2 for everyone
    now[0] += 60.0
    assert overall.refused("c") == 0.0


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_guessing_over_http_is_locked_out_and_parallel_logins_do_not_exhaust_memory(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    console = WebConsole(write_config(tmp_path, web={"password_hash": hash_password(PASSWORD),
                                                     "max_failed_logins": 3, "lockout_seconds": 60.0}))
    try:
        client = Client(console)
        assert client.request("GET", "/login")[0] == 200
        before = _peak_rss_mib(console.proc.pid)
        # 40 clients at once (one address here, as behind a proxy): scrypt ~32 MB each took 1.44 GB before
        clients = [Client(console) for _ in range(40)]
        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(lambda c: c.login("guess"), clients))
        grown = _peak_rss_mib(console.proc.pid) - before
        assert grown < 200, f"peak RSS grew by {grown:.0f} MiB with 40 parallel logins"
        # 3 checked (then the address is locked out, also for those already waiting), the rest refused
        assert statuses.count(401) == 3 and statuses.count(429) == 37, statuses
        # the address is now locked out: even the right password is refused, and it says for how long
        token = client.csrf("/login")
        status, headers, text = client.request("POST", "/login", f"password={PASSWORD}&csrf_token={token}",
                                               {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 429 and int(headers["retry-after"]) > 0 and "try again in" in text
        log = console.log.read_text()
        assert "failed login from 127.0.0.1" in log and "locked out for 60 s" in log and "refused" in log
    finally:
        console.stop()


def test_a_setting_written_from_the_console_keeps_the_file_comments_and_permissions(tmp_path):
    """agent/web/settings.py (Reports' "Use 0.xxx"): the value replaces the old one, its comment and every other
    line stay, the file keeps its mode (it may hold secrets); a value the schema refuses, a broken file or no file
    at all is a clear error and the file is left as it was."""
    import os

    import tomlkit

    from agent.web.settings import SettingError, write_setting

    config = tmp_path / "agent.toml"
    original = ('# my agent\n[agent]\nid = "porch"  # the name on MQTT\n\n[recognition]\n'
                'distance_threshold = 0.265  # my own note\nmargin_weight = 0.5\n')
    config.write_text(original)
    os.chmod(config, 0o640)
    assert write_setting(config, "recognition", "distance_threshold", 0.243) == 0.265
    assert config.read_text() == original.replace("0.265  # my own note", "0.243  # my own note")
    assert os.stat(config).st_mode & 0o777 == 0o640
    assert tomlkit.parse(config.read_text())["recognition"]["distance_threshold"] == 0.243
    config.write_text('[agent]\nid = "porch"\n')  # no [recognition] yet: added, with the note as its comment
    write_setting(config, "recognition", "distance_threshold", 0.25, note="face-agent tune")
    assert config.read_text() == '[agent]\nid = "porch"\n\n[recognition]\ndistance_threshold = 0.25 # face-agent tune\n'
    before = config.read_text()
    with pytest.raises(SettingError, match="distance_threshold: 0.9 is out of range: must be above 0 and at most 0.5"):
        write_setting(config, "recognition", "distance_threshold", 0.9)
    config.write_text("[agent\n")
    with pytest.raises(SettingError, match="not valid TOML"):
        write_setting(config, "recognition", "distance_threshold", 0.25)
    assert config.read_text() == "[agent\n" and before != "[agent\n"
    with pytest.raises(SettingError, match="without a config file"):
        write_setting(None, "recognition", "distance_threshold", 0.25)
    assert not [p for p in tmp_path.iterdir() if p.name != "agent.toml"]  # no temporary file left


def test_removing_the_last_photo_forgets_the_person_with_undo(tmp_path):
    """Issue 28.2: the person page's Remove goes through agent.enrollment_ops as `face-agent remove` and
    remote `remove_images`: one photo removed, the person stays; the last one removed, the person is
    forgotten (their identifications erased), the People page offers Undo, and Undo brings the photo back."""
    import shutil
    from urllib.parse import quote

    from conftest import FR

    from agent.config import load_config
    from agent.events import EventFactory
    from agent.store import EventStore

    config = write_config(tmp_path)
    cfg = load_config(config)
    raw = tmp_path / "faces" / "train" / "raw" / "biden"
    raw.mkdir(parents=True)
    for photo in sorted((FR / "examples" / "knn_examples" / "train" / "biden").iterdir()):
        shutil.copy(photo, raw / photo.name)
    first, last = sorted(p.name for p in raw.iterdir())
    with EventStore(cfg) as events:
        events.add(EventFactory.from_config(cfg).identified(1, "biden", 0.9, 3, (10, 10, 60, 70), (160, 120)))
    console = WebConsole(config)
    try:
        client = Client(console)
        token = client.csrf("/people")
        form = {"X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
        # as `face-agent remove`: a ref not found is named, nothing removed answers 404, a bad name a clean 404
        status, _, text = client.request("POST", "/people/biden/remove", urlencode({"photo": "nosuch.jpg"}), form)
        assert status == 404 and "no such photo of biden: nosuch.jpg" in text
        status, _, text = client.request("POST", "/people/.hidden/remove", urlencode({"photo": first}), form)
        assert status == 404 and "cannot start with '.'" in text
        status, _, text = client.request("POST", "/people/nobody/remove", urlencode({"photo": first}), form)
        assert status == 404 and "'nobody' is not enrolled" in text
        assert sorted(p.name for p in raw.iterdir()) == [first, last]
        status, headers, _ = client.request("POST", "/people/biden/remove",
                                            urlencode([("photo", first), ("photo", "nosuch.jpg")]), form)
        assert status == 204 and headers["hx-redirect"] == "/people/biden"
        assert sorted(p.name for p in raw.iterdir()) == [last]
        _, _, text = client.request("GET", "/people/biden")
        assert f"removed {first}" in text and "no such photo of biden: nosuch.jpg" in text
        status, headers, _ = client.request("POST", "/people/biden/remove", urlencode({"photo": last}), form)
        assert status == 204 and headers["hx-redirect"].startswith("/people?forgot=biden-"), headers
        assert not raw.exists()
        _, _, text = client.request("GET", headers["hx-redirect"])
        assert "biden had no photos left, so they were forgotten everywhere on this agent" in text
        assert "biden was forgotten: 1 photo in the trash" in text  # the Undo card
        with EventStore(cfg) as events:
            assert not [e for e in events.query(limit=None) if e.type == "identified"]
        folder = headers["hx-redirect"].split("forgot=", 1)[1]
        status, headers, _ = client.request("POST", "/people/restore",
                                            urlencode({"person": "biden", "folder": folder}), form)
        assert status == 204 and headers["hx-redirect"] == f"/people/{quote('biden')}"
        assert [p.name for p in raw.iterdir()] == [last]
        # what the console refuses is answered 400 with its reason (nothing changes)
        for path, fields, reason in [("/people/biden/rename", {"new_name": ".x"}, "cannot start with '.'"),
                                     ("/people/nobody/rename", {"new_name": "x"}, "'nobody' is not enrolled"),
                                     ("/people/nobody/forget", {}, "'nobody' is not enrolled"),
                                     ("/people/restore", {"person": "a/b", "folder": folder}, "not allowed")]:
            status, _, text = client.request("POST", path, urlencode(fields), form)
            assert status == 400 and reason in text, (path, status, text)
        assert [p.name for p in raw.iterdir()] == [last]
    finally:
        console.stop()
