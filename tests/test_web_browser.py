"""The web console in a real browser: Debian's chromium driven by Playwright, against a real `face-agent web`
on a free 127.0.0.1 port and storage made from the shared photos and the Hamilton clip, on a phone-sized
screen. Screenshots go to a temporary folder (printed; kept as artifacts of the run, not committed)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DLIB, FR, make_config
from PIL import Image
from webconsole import WebConsole, write_config

from agent.gallery import Gallery
from agent.health import status_path, write_status
from agent.service import Service
from agent.web.security import hash_password
from bench import identity_clips as ic

CHROMIUM = Path(os.environ.get("FACE_AGENT_CHROMIUM", "/usr/bin/chromium"))
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} missing (Debian package chromium)")

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
KNN_TRAIN = FR / "examples" / "knn_examples" / "train"
PASSWORD = "open sesame 18"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("FACE_AGENT_SCREENSHOTS") or tempfile.mkdtemp(prefix="face-agent-web-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory, analyzer):
    """Storage with obama and biden enrolled and the events of runs on clips of three LFW strangers, then one on
    the Hamilton clip (thumbnails on, live frame on, every settled track's faces kept: privacy "all"), and a
    console with a password on it."""
    tmp = tmp_path_factory.mktemp("web")
    sections = {"events": {"thumbnails": True}, "service": {"live_frame_interval": 0.5},
                "sightings": {"privacy": "all"},
                "agent": {"id": "web-test", "camera_name": "stage"}, "mqtt": {"enabled": False}}
    cfg = make_config(tmp, **sections)
    gallery = Gallery(cfg, analyzer=analyzer)
    for person in ("obama", "biden"):
        gallery.add_photos(person, sorted((KNN_TRAIN / person).iterdir()))
    gallery.add_photos("lin", [FR / "examples" / "lin-manuel-miranda.png"])
    gallery.add_photos("biden", [DLIB / "examples" / "faces" / "dogs.jpg"])  # in the folder, refused: no face
    gallery.ensure_trained(progress=False)
    gallery.close()
    # never enrolled: unknown people with several good faces (one to name, two to merge and ignore)
    for k, stranger in enumerate(ic.lfw_people()[:3]):
        clip = ic.Clip(f"stranger{k}", 60, [ic.Actor("stranger:" + stranger.name, ic.lfw_photos(stranger)[5], 0, 60)])
        video = ic.render(clip, tmp / f"stranger{k}.mp4")
        assert Service(cfg, source_uri=str(video), every_frame=True, analyzer=analyzer).run() == 0
    assert Service(cfg, source_uri=str(HAMILTON), every_frame=True, analyzer=analyzer).run() == 0
    config = write_config(tmp, web={"password_hash": hash_password(PASSWORD)}, **sections)
    console = WebConsole(config)
    yield console, tmp
    console.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # chromium writes its profile and crash folders under HOME
    try:
        with playwright.sync_playwright() as p:
            b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox"])
            yield b
            b.close()
    finally:
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home


def images_loaded(page, selector: str, width: int | None = None, timeout: float = 15.0) -> None:
    """Wait until every image matching selector has loaded (naturalWidth == width, or > 0 when width is None).

    Polled from Python with page.evaluate: page.wait_for_function evaluates its predicate with eval() in the page,
    which the console's Content-Security-Policy (script-src 'self') forbids once the check has to poll."""
    check = (f"Array.from(document.querySelectorAll({selector!r}))"
             f".every(i => i.complete && {'i.naturalWidth > 0' if width is None else f'i.naturalWidth == {width}'})")
    deadline = time.monotonic() + timeout
    while not page.evaluate(check):
        assert time.monotonic() < deadline, f"images {selector} not loaded within {timeout} s"
        time.sleep(0.1)


def flash_says(page, says: str | re.Pattern, timeout: float = 30_000) -> None:
    """Wait for the flash message of this action (a page can still show the one of the action before: htmx
    navigates only once the POST has been answered, after click() returned)."""
    playwright.expect(page.locator("p.flash", has_text=says).first).to_be_visible(timeout=timeout)


def fits_the_phone(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"{page.url}: {width} px wide on a {PHONE['width']} px screen"


def test_the_console_in_a_browser(site, browser, shots, tmp_path):
    console, storage = site
    url = console.url
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("dialog", lambda dialog: dialog.accept())

    # nothing without the login: every page and file lands on the login form
    for path in ("/live", "/events", "/people", "/people/obama", "/unknowns", "/files/live/live.jpg",
                 "/files/photo/obama/" + sorted(p.name for p in (storage / "faces/train/raw/obama").iterdir())[0]):
        page.goto(url + path)
        assert page.url == url + "/login", path
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong password" in page.inner_text("main")
    page.screenshot(path=str(shots / "01-login.png"), full_page=True)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/live")

    # Live: the last annotated frame of the run and the agent's state from the status file
    frame = page.locator("img.frame")
    assert frame.count() == 1 and page.evaluate("document.querySelector('img.frame').naturalWidth") == 640
    assert "not running" in page.inner_text("#agent-state")  # the clip ended: the status says stopped
    assert "onnxruntime" in page.inner_text(".facts")
    fits_the_phone(page)
    page.screenshot(path=str(shots / "02-live.png"), full_page=True)
    # the panel follows the status file (htmx polls it every 2 s)
    write_status(status_path(make_config(storage)), {"interval": 10.0, "agent_id": "web-test", "health": {
        "state": "ok", "reasons": [], "checks": {}}, "stats": {"fps": 12.5, "frames": 1, "events": 0,
                                                             "backend": "onnxruntime", "source": {}}})
    playwright.expect(page.locator("#fps")).to_contain_text("12.5", timeout=10_000)
    assert page.inner_text("#agent-state") == "ok"

    # Events: the run's timeline with face thumbnails; filters by type and person; a track's events
    page.goto(url + "/events")
    thumbs = page.locator("img.thumb")
    assert thumbs.count() > 0
    assert page.evaluate("Array.from(document.querySelectorAll('img.thumb')).every(i => i.naturalWidth > 0)")
    fits_the_phone(page)
    page.screenshot(path=str(shots / "03-events.png"), full_page=True)
    page.select_option("select[name=type]", "identified")
    page.fill("input[name=person]", "lin")
    page.select_option("select[name=camera]", "stage")
    page.fill("input[name=since]", "1h")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*type=identified.*"))
    kinds = page.locator("li.event strong").all_inner_texts()
    assert kinds and set(kinds) == {"identified"}
    assert set(page.locator("li.event .name").all_inner_texts()) == {"lin"}
    page.goto(url + "/events?since=2000-01-01&until=2000-01-02")  # a time with nothing in it
    assert page.locator("li.event").count() == 0 and "No events match" in page.inner_text("main")
    page.go_back()
    page.locator("li.event a", has_text="track").first.click()
    page.wait_for_url(re.compile(r".*track=\d+.*"))
    assert page.locator("li.event").count() >= 2  # the track's start, its naming, its end

    # People: upload photos for a new person (one refused: no face) and see them trained
    page.goto(url + "/people")
    assert "obama" in page.inner_text(".grid") and "3 people" in page.inner_text("#training")
    assert "3 photos, 2 trained" in page.locator("a.person", has_text="biden").inner_text()
    page.fill("input[name=person]", "Kit Harington")
    photos = sorted((KNN_TRAIN / "kit_harington").iterdir())
    wall = tmp_path / "wall.jpg"
    Image.new("RGB", (320, 240), (180, 170, 160)).save(wall)
    page.set_input_files("form.upload input[type=file]", [*map(str, photos), str(wall)])
    page.click("form.upload button[type=submit]")
    page.wait_for_url(url + "/people/Kit%20Harington", timeout=120_000)
    flash = page.inner_text("main")
    assert "wall.jpg: refused - wall.jpg: no face found" in flash and "classifier retrained: 4 people" in flash
    assert page.locator("figure.photo.ok").count() == len(photos)
    assert f"{len(photos)} in the classifier" in page.inner_text("#person-state")
    assert page.locator("figure.photo img.chip").count() == len(photos)
    assert page.evaluate("Array.from(document.querySelectorAll('img.chip')).every(i => i.naturalWidth == 150)")
    fits_the_phone(page)
    page.screenshot(path=str(shots / "04-person.png"), full_page=True)

    # remove a photo, rename, forget: each retrains
    page.locator("figure.photo button", has_text="Remove").first.click()
    page.wait_for_selector("text=removed")
    assert page.locator("figure.photo").count() == len(photos) - 1
    page.fill("input[name=new_name]", "Kit")
    page.click("form.inline button[type=submit]")
    page.wait_for_url(url + "/people/Kit")
    assert "renamed Kit Harington to Kit" in page.inner_text("main")
    page.click("button.danger:has-text('Forget Kit')")
    page.wait_for_url(url + "/people")
    assert "forgot Kit" in page.inner_text("main") and "3 people" in page.inner_text("#training")
    page.screenshot(path=str(shots / "05-people.png"), full_page=True)

    # a bad name is refused with the gallery's reason
    page.fill("input[name=person]", "a/b")
    page.set_input_files("form.upload input[type=file]", str(photos[0]))
    page.click("form.upload button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "not allowed in a name" in page.inner_text("#error")

    page.goto(url + "/unknowns")
    assert page.locator("section.cluster").count() > 0
    fits_the_phone(page)

    # a desktop-sized window gets the wider layout
    desktop = browser.new_context(viewport={"width": 1280, "height": 800}, storage_state=context.storage_state())
    wide = desktop.new_page()
    wide.goto(url + "/people/biden")
    assert wide.url == url + "/people/biden" and wide.locator("figure.photo.ok").count() == 2
    refused = wide.locator("figure.photo.refused")
    assert refused.count() == 1 and "no face" in refused.inner_text()
    wide.screenshot(path=str(shots / "06-person-desktop.png"), full_page=True)
    wide.goto(url + "/live")
    wide.screenshot(path=str(shots / "07-live-desktop.png"), full_page=True)
    desktop.close()

    # logged out: nothing again
    page.click("#logout")
    page.wait_for_url(url + "/login")
    page.goto(url + "/events")
    assert page.url == url + "/login"
    context.close()


def login(browser, url: str, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(url + "/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/live")
    return context, page


def test_name_an_unknown_person_and_reject_an_identification(site, browser, shots):
    """The strangers of the Hamilton run are unknown people with chips; naming one enrolls it (People page);
    "that was not lin" on an identification is taken and said so."""
    console, _ = site
    url = console.url
    context, page = login(browser, url, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)

    page.goto(url + "/unknowns")
    clusters = page.locator("section.cluster.open")
    assert clusters.count() > 0
    # the chips load lazily (below the fold on a phone): load them all now, then every one is a 150 px chip
    page.evaluate("document.querySelectorAll('.cluster img.chip').forEach(i => { i.loading = 'eager'; })")
    images_loaded(page, ".cluster img.chip", width=150)
    counts = [re.search(r"(\d+) sightings in \d+ tracks\s+first seen 20\d\d-.*UTC\s+last seen 20\d\d-", text)
              for text in clusters.locator(".counts").all_inner_texts()]
    assert all(counts)
    stranger = clusters.nth(max(range(len(counts)), key=lambda i: int(counts[i].group(1))))  # the LFW stranger
    assert stranger.locator("img.chip").count() >= 2
    fits_the_phone(page)
    page.screenshot(path=str(shots / "08-unknowns.png"), full_page=True)

    # name the first one as a new person: its faces are enrolled and the classifier retrained
    unknown_id = stranger.locator("h2").inner_text().split()[0]
    stranger.locator("input[name=person]").fill("Stranger One")
    stranger.locator("form.name-form button[type=submit]").click()
    page.wait_for_url(url + "/people/Stranger%20One", timeout=120_000)
    text = page.inner_text("main")
    assert f"{unknown_id} is now Stranger One" in text and "classifier retrained: 4 people" in text
    assert page.locator("figure.photo.ok").count() > 0
    page.screenshot(path=str(shots / "09-named.png"), full_page=True)
    page.goto(url + "/people")
    assert "Stranger One" in page.inner_text(".grid")
    page.goto(url + "/unknowns")
    named = page.locator(f"#cluster-{unknown_id}")
    assert "named Stranger One" in named.inner_text() and named.locator("form").count() == 0

    # "that was not lin" on an identification of the run
    page.goto(url + "/events?type=identified&person=lin")
    button = page.locator("li.event button.reject").first
    assert button.inner_text() == "That was not lin"
    button.click()
    flash_says(page, re.compile(r"track \d+ is not lin"), timeout=120_000)
    flash = page.inner_text("main")
    assert re.search(r"track \d+ is not lin: \d+ faces are now known not to be lin", flash), flash
    assert page.url.startswith(url + "/events?type=identified")
    assert page.locator("li.event .rejected").all_inner_texts() == ["rejected: not lin"]
    assert page.locator("li.event button.reject").count() == page.locator("li.event").count() - 1
    fits_the_phone(page)
    page.screenshot(path=str(shots / "10-rejected.png"), full_page=True)
    context.close()

    desktop, wide = login(browser, url, viewport={"width": 1280, "height": 800})
    wide.goto(url + "/unknowns")
    wide.screenshot(path=str(shots / "11-unknowns-desktop.png"), full_page=True)
    desktop.close()


def test_merge_and_ignore_unknown_people_track_faces_and_the_tune_report(site, browser, shots):
    """Two unknown people of the runs merged into one (its counts add up, the merged id is listed), one
    ignored (gone from the list, on the ignored list without a name form) and shown again; an event's link to
    the faces kept of its track; "Run tune now" on the People page's report page shows the report and its plot."""
    console, _ = site
    url = console.url
    context, page = login(browser, url, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)

    def sightings(card) -> int:
        return int(re.search(r"(\d+) sightings", card.locator(".counts").inner_text()).group(1))

    page.goto(url + "/unknowns")
    clusters = page.locator("section.cluster.open")
    assert clusters.count() >= 2
    source, target = clusters.nth(0), clusters.nth(1)
    source_id, target_id = (c.locator("h2").inner_text().split()[0] for c in (source, target))
    total = sightings(source) + sightings(target)
    source.locator("select[name=into]").select_option(target_id)
    source.locator("form.merge-form button[type=submit]").click()
    flash_says(page, f"{source_id} merged into {target_id}")
    assert f"{source_id} merged into {target_id}" in page.inner_text("main")
    merged = page.locator(f"#cluster-{target_id}")
    assert sightings(merged) == total and f"merged from {source_id}" in merged.inner_text()
    assert page.locator(f"#cluster-{source_id}").count() == 0
    assert all(source_id not in options for options in page.locator("select[name=into]").all_inner_texts())
    fits_the_phone(page)
    page.screenshot(path=str(shots / "12-merged.png"), full_page=True)

    # ignore the merged one: hidden here, listed with the ignored ones (no name form), then shown again
    page.locator(f"#cluster-{target_id} button.ignore").click()
    flash_says(page, f"{target_id} ignored")
    assert f"{target_id} ignored" in page.inner_text("main") and page.locator(f"#cluster-{target_id}").count() == 0
    page.click("#show-filter a")
    page.wait_for_url(url + "/unknowns?show=ignored")
    ignored = page.locator(f"#cluster-{target_id}")
    assert ignored.count() == 1 and "ignored" in ignored.locator("h2").inner_text()
    assert ignored.locator("form.name-form").count() == 0
    fits_the_phone(page)
    page.screenshot(path=str(shots / "13-ignored.png"), full_page=True)
    ignored.locator("button.unignore").click()
    flash_says(page, f"{target_id} is shown again")
    assert f"{target_id} is shown again" in page.inner_text("main")
    assert page.locator(f"#cluster-{target_id} form.name-form").count() == 1

    # Events: a track event links to the faces kept of its track
    page.goto(url + "/events?type=track_ended")
    link = page.locator("li.event a.faces").first
    count = int(link.inner_text().split()[0])
    link.click()
    page.wait_for_url(re.compile(r".*/events/[0-9A-Z]{26}/faces$"))
    faces = page.locator("figure.face")
    assert faces.count() == count >= 1
    page.evaluate("document.querySelectorAll('figure.face img').forEach(i => { i.loading = 'eager'; })")  # lazy
    images_loaded(page, "figure.face img.chip", width=150)
    images_loaded(page, "figure.face img.context")
    assert re.search(r"quality 0\.\d\d", faces.first.inner_text())
    fits_the_phone(page)
    page.screenshot(path=str(shots / "14-track-faces.png"), full_page=True)

    # People -> the evaluation reports: none yet; run tune from the console, see the report and its plot
    page.goto(url + "/people")
    page.click("#reports-link")
    page.wait_for_url(url + "/reports")
    assert page.locator("#no-reports").count() == 1
    page.click("#run-tune")
    flash_says(page, "tune:", timeout=120_000)
    assert "tune:" in page.inner_text("main") and "suggested distance_threshold" in page.inner_text("main")
    report = page.locator("#report-tune")
    assert "distance_threshold = 0." in report.locator("pre").inner_text()
    images_loaded(page, "#report-tune img.plot")
    assert page.evaluate("document.querySelector('#report-tune img.plot').naturalWidth") >= 1000
    fits_the_phone(page)
    page.screenshot(path=str(shots / "15-tune-report.png"), full_page=True)
    context.close()
