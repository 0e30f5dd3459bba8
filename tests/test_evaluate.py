"""`face-agent eval` / `tune` on the real photos with the real models: splits, rates, thresholds, detections."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMPREFACE, DLIB, FR, ROOT, make_config
from PIL import Image

from agent.cli import main
from agent.evaluation import EvalError
from agent.evaluation.detections import evaluate_detections, match_detections, read_dlib_xml
from agent.evaluation.folders import evaluate_folder
from agent.evaluation.metrics import equal_error, threshold_for_far
from agent.evaluation.report import format_eval, format_tune, plot_report
from agent.evaluation.tune import tune_gallery
from agent.gallery import Gallery

JOHNS = DLIB / "examples" / "johns"
FACES = DLIB / "examples" / "faces"
KNN = FR / "examples" / "knn_examples"
TEST_IMAGES = FR / "tests" / "test_images"
CORRUPTED = COMPREFACE / "embedding-calculator" / "src" / "services" / "imgtools" / "test" / "files" / "corrupted.png"


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache for the module: every photo is embedded once."""
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_config(tmp_path_factory.mktemp("eval-cfg"))


@pytest.fixture(scope="module")
def johns(cfg, analyzer, cache) -> dict:
    return evaluate_folder(JOHNS, cfg, analyzer, cache_dir=cache, strangers=2, seed=0, repeats=3)


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text("[paths]\n" + "".join(f'{k} = "{tmp_path / k}"\n' for k in ("storage", "engines", "svm", "faces")))
    return path


# ---- johns: 5 people x 11 aligned chips, 2 strangers -------------------------------------------------------

def test_johns_photos_and_duplicate(johns):
    ph = johns["photos"]
    assert ph["files"] == 55 and ph["usable"] == 54
    assert ph["failures"] == [] and ph["conflicts"] == []
    (dup,) = ph["duplicates"]
    assert dup["person"] == "John_Shimkus" and dup["status"] == "duplicate"
    assert johns["people"] == {"John_Salley": 11, "John_Savage": 11, "John_Schneider": 11, "John_Shimkus": 10,
                               "John_Simm": 11}


def test_johns_splits(johns):
    assert len(johns["splits"]) == 3
    for split in johns["splits"]:
        assert len(split["strangers"]) == 2 and len(split["enrolled"]) == 3
        assert set(split["strangers"]).isdisjoint(split["enrolled"])
        assert len(split["enrollment"]) == 9  # --enroll-k 3
        enrolled_hashes = {sha(p) for p in split["enrollment"]}
        query_hashes = {sha(q["path"]) for q in split["queries"]}
        assert enrolled_hashes.isdisjoint(query_hashes)  # the duplicate chip is never on both sides
        assert len(split["enrollment"]) + len(split["queries"]) == 54
        for q in split["queries"]:
            assert (q["kind"] == "stranger") == (q["person"] in split["strangers"])
    # different seeds, different strangers or enrollment photos
    assert len({tuple(s["strangers"]) + tuple(s["enrollment"]) for s in johns["splits"]}) == 3


def test_johns_accuracy_and_thresholds(johns):
    cs, d = johns["closed_set"], johns["distances"]
    assert cs["accuracy"] == 1.0 and cs["svm_accuracy"] == 1.0
    assert johns["queries"]["strangers"] > 0 and johns["queries"]["enrolled"] > 0
    # strangers are unknown at the default threshold, enrolled people named right
    at = d["at"]["configured"]
    assert at["threshold"] == 0.265
    assert at["trr"] == 1.0 and at["strangers_named"] == 0
    assert at["tar"] >= 0.95 and at["enrolled_named_wrong"] == 0
    # effective distances: same person ~0.1-0.3, different people ~0.4-0.7
    assert d["genuine"]["median"] < 0.2 < 0.265 < 0.4 < d["impostor"]["median"]
    assert d["eer"]["rate"] <= 0.05 and 0.25 <= d["eer"]["threshold"] <= 0.45
    chosen = d["chosen"]
    # 3 splits pool ~135 impostor distances: 1% is measurable and one of them may pass
    assert chosen["basis"] == "target_far" and 0.3 <= chosen["threshold"] <= 0.5
    assert chosen["impostors_accepted"] <= 0.01 * chosen["impostors"]
    assert d["at"]["chosen"]["far"] <= 0.01 and d["at"]["chosen"]["tar"] == 1.0
    # curves: monotone rates on the grid
    c = d["curves"]
    assert len(c["thresholds"]) == len(c["far"]) == len(c["tar"]) == len(c["trr"])
    assert np.all(np.diff(c["far"]) >= 0) and np.all(np.diff(c["frr"]) <= 0)
    assert johns["open_set_eer"]["rate"] <= 0.05


def test_eval_threshold_is_the_runtime_threshold(johns):
    """One voice: a query whose nearest person is its own is named exactly when its genuine effective
    distance (what eval and tune threshold) is within the configured threshold and the SVM agrees."""
    t = johns["settings"]["configured_threshold"]
    checked = 0
    for split in johns["splits"]:
        for q in split["queries"]:
            if q["kind"] == "enrolled" and q["candidate"] == q["person"]:
                assert (q["name"] == q["person"]) == (q["genuine"] <= t and q["svm"] == q["person"]), q
                checked += 1
    assert checked >= 60


def test_johns_text_report(johns):
    text = format_eval(johns)
    assert "closed-set identification" in text and "100.0%" in text
    assert "(configured)" in text and "(chosen)" in text
    assert "John_Shimkus/" in text and "duplicate" in text


def test_determinism_by_seed(johns, cfg, analyzer, cache):
    again = evaluate_folder(JOHNS, cfg, analyzer, cache_dir=cache, strangers=2, seed=0, repeats=3)
    assert json.dumps(again, sort_keys=True) == json.dumps(johns, sort_keys=True)
    other = evaluate_folder(JOHNS, cfg, analyzer, cache_dir=cache, strangers=2, seed=7)
    assert other["splits"][0]["enrollment"] != johns["splits"][0]["enrollment"]


def test_named_strangers_and_enroll_k(cfg, analyzer, cache):
    r = evaluate_folder(JOHNS, cfg, analyzer, cache_dir=cache, stranger_names=["John_Simm"], enroll_k=1)
    (split,) = r["splits"]
    assert split["strangers"] == ["John_Simm"] and len(split["enrollment"]) == 4
    assert r["queries"]["strangers"] == 11
    assert r["closed_set"]["accuracy"] >= 0.95  # one photo per person still recognises the Johns


@pytest.mark.parametrize("kwargs, message", [
    ({"stranger_names": ["Nobody"]}, "no usable photos"),
    ({"strangers": 5}, "nobody left to enroll"),
    ({"enroll_k": 0}, "--enroll-k"),
    ({"target_far": 1.5}, "--target-far"),
    ({"strangers": 1, "stranger_names": ["John_Simm"]}, "not both"),
])
def test_bad_arguments(cfg, analyzer, cache, kwargs, message):
    with pytest.raises(EvalError, match=message):
        evaluate_folder(JOHNS, cfg, analyzer, cache_dir=cache, **kwargs)


def test_missing_folder(cfg, analyzer, tmp_path):
    with pytest.raises(EvalError, match="not a folder"):
        evaluate_folder(tmp_path / "nope", cfg, analyzer, cache_dir=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="no <person>/<photo> folders"):
        evaluate_folder(tmp_path / "empty", cfg, analyzer, cache_dir=tmp_path / "c")


def test_same_photo_under_two_people_is_a_conflict(tmp_path, cfg, analyzer, cache):
    photos = sorted((JOHNS / "John_Salley").iterdir())
    for person, files in {"A": photos[:4], "B": sorted((JOHNS / "John_Savage").iterdir())[:4] + [photos[0]]}.items():
        (tmp_path / "d" / person).mkdir(parents=True)
        for f in files:
            (tmp_path / "d" / person / f.name).symlink_to(f)
    r = evaluate_folder(tmp_path / "d", cfg, analyzer, cache_dir=cache)
    conflicts = r["photos"]["conflicts"]
    assert {c["person"] for c in conflicts} == {"A", "B"} and len(conflicts) == 2
    assert r["people"] == {"A": 3, "B": 4}
    for split in r["splits"]:
        assert str(tmp_path / "d" / "A" / photos[0].name) not in split["enrollment"]


# ---- command line: table, JSON, PNG -------------------------------------------------------------------------

def test_cli_json_and_plot(tmp_path, capsys, cache):
    png = tmp_path / "out" / "johns.png"
    code = main(["-q", "-c", str(config_file(tmp_path)), "eval", str(JOHNS), "--cache", str(cache),
                 "--strangers", "2", "--json", "--plot", str(png)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["detections"] is None
    rec = out["recognition"]
    assert rec["closed_set"]["accuracy"] == 1.0 and rec["settings"]["cache"] == str(cache)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width >= 1000 and img.height >= 500
    assert not (tmp_path / "faces").exists()  # the live gallery is never touched
    # the last report is kept for the web console: [evaluation] reports under the storage folder
    kept = tmp_path / "storage" / "reports"
    assert json.loads((kept / "eval.json").read_text())["recognition"]["closed_set"]["accuracy"] == 1.0
    assert "closed-set identification" in (kept / "eval.txt").read_text()
    with Image.open(kept / "eval.png") as img:
        assert img.format == "PNG" and img.width >= 1000
    with Image.open(kept / "eval-phone.png") as img:  # the same plot for a phone: the panels one above the other
        assert img.height > img.width
    assert sorted(p.name for p in kept.iterdir()) == ["eval-phone.png", "eval.json", "eval.png", "eval.txt"]  # no tmp


def test_cli_table(tmp_path, capsys, cache):
    code = main(["-q", "-c", str(config_file(tmp_path)), "eval", str(JOHNS), "--cache", str(cache),
                 "--stranger", "John_Simm", "--stranger", "John_Salley"])
    assert code == 0
    out = capsys.readouterr().out
    assert "threshold for false accepts <= 1.0%" in out and "equal error rate" in out


def test_cli_errors(tmp_path, capsys):
    assert main(["-q", "-c", str(config_file(tmp_path)), "eval"]) == 2
    assert "give DIR" in capsys.readouterr().err
    assert main(["-q", "-c", str(config_file(tmp_path)), "eval", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_agent_does_not_import_matplotlib():
    code = ("import sys, agent.cli, agent.evaluation.folders, agent.evaluation.tune, agent.commands.eval, "
            "agent.commands.tune;"
            "agent.cli.build_parser(); assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- face_recognition photos: person folders in tmp, with duplicates and failures ---------------------------

@pytest.fixture(scope="module")
def fr_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fr-people")
    links = {person.name: sorted(person.iterdir()) for person in (KNN / "train").iterdir()}
    links["alex_lacamoire"].append(KNN / "test" / "alex_lacamoire1.jpg")
    links["kit_harington"] += [KNN / "test" / "johnsnow_test1.jpg", KNN / "test" / "kit_with_rose.jpg"]
    links["obama"] += [KNN / "test" / "obama1.jpg"] + [TEST_IMAGES / f"obama{s}.jpg" for s in ("", "2", "3")]
    links["biden"] += [TEST_IMAGES / "biden.jpg", CORRUPTED]
    for person, files in links.items():
        (root / person).mkdir()
        for i, f in enumerate(files):
            (root / person / f"{i:02d}_{f.name}").symlink_to(f)
    return root


@pytest.mark.slow
def test_face_recognition_photos(fr_dir, cfg, analyzer, cache, tmp_path):
    r = evaluate_folder(fr_dir, cfg, analyzer, cache_dir=cache, repeats=5)
    status = r["photos"]["by_status"]
    assert status == {"usable": 14, "duplicate": 3, "unreadable": 1}, status
    failures = {Path(f["path"]).name.split("_", 1)[1]: f["status"] for f in r["photos"]["failures"]}
    assert failures == {"corrupted.png": "unreadable"}
    assert r["people"] == {"alex_lacamoire": 2, "biden": 2, "kit_harington": 4, "obama": 4, "rose_leslie": 2}
    # kit_with_rose.jpg (Kit and Rose, neither face dominant) is never enrolled but is a query, and its
    # face is the one identify names kit_harington
    for split in r["splits"]:
        assert not any("kit_with_rose" in p for p in split["enrollment"])
        (kit,) = [q for q in split["queries"] if "kit_with_rose" in q["path"]]
        assert kit["name"] == "kit_harington"
    assert r["closed_set"]["accuracy"] == 1.0
    d = r["distances"]
    assert d["eer"]["rate"] == 0.0 and 0.25 <= d["eer"]["threshold"] <= 0.5
    assert 0.25 <= d["chosen"]["threshold"] < d["impostor"]["min"]
    assert d["chosen"]["basis"] == "equal_error"  # 13 photos: too few impostors to measure 1%
    assert d["at"]["configured"]["tar"] == 1.0 and d["at"]["configured"]["false_accepts"] == 0
    assert any("cannot be measured" in w for w in r["warnings"])  # few impostor distances
    for split in r["splits"]:
        assert {sha(p) for p in split["enrollment"]}.isdisjoint({sha(q["path"]) for q in split["queries"]})
    text = format_eval(r)
    assert "unreadable" in text
    plot_report(r, tmp_path / "fr.png")
    assert (tmp_path / "fr.png").stat().st_size > 10_000


# ---- detections against dlib's XML ---------------------------------------------------------------------------

def test_detections_testing_xml(analyzer, cfg):
    r = evaluate_detections(FACES / "testing.xml", analyzer, cfg)
    assert r["images"] == 5 and r["faces"] == 25 and r["errors"] == []
    assert r["recall"] >= 0.9
    assert r["precision"] >= 0.9
    assert r["mean_iou"] > 0.6
    print(f"testing.xml: precision {r['precision']}, recall {r['recall']}, mean IoU {r['mean_iou']}")


def test_detections_ignore_boxes_and_missing_images(tmp_path, analyzer, cfg, capsys):
    (tmp_path / "img.jpg").symlink_to(FACES / "2008_002506.jpg")  # 3 faces
    (tmp_path / "testing.xml").write_text(
        "<dataset><images>"
        "<image file='img.jpg'><box top='78' left='329' width='109' height='109'/>"
        "<box top='95' left='224' width='91' height='91' ignore='1'/>"
        "<box top='65' left='125' width='90' height='91'/></image>"
        "<image file='missing.jpg'><box top='1' left='1' width='40' height='40'/></image>"
        "</images></dataset>")
    r = evaluate_detections(tmp_path / "testing.xml", analyzer, cfg)
    assert r["faces"] == 2 and r["true_positives"] == 2 and r["ignored"] == 1 and r["false_positives"] == 0
    assert len(r["errors"]) == 1 and "missing.jpg" in r["errors"][0]["error"]
    code = main(["-q", "-c", str(config_file(tmp_path)), "eval", "--detections", str(tmp_path / "testing.xml")])
    assert code == 1  # an image could not be read
    out = capsys.readouterr().out
    assert "recall    100.0%" in out and "missing.jpg" in out


def test_read_dlib_xml_errors(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<dataset><images><image file='a.jpg'><box top='x'/></image></images></dataset>")
    with pytest.raises(EvalError, match="numeric top, left, width and height"):
        read_dlib_xml(bad)
    bad.write_text("<dataset><images>")
    with pytest.raises(EvalError, match="not a readable XML"):
        read_dlib_xml(bad)
    with pytest.raises(EvalError, match="no such file"):
        read_dlib_xml(tmp_path / "none.xml")
    images = read_dlib_xml(FACES / "training.xml")
    assert sum(len(i["boxes"]) for i in images) == 18 and images[0]["file"].parent == FACES


def test_match_detections_greedy_by_score():
    truth = [(0, 0, 10, 10), (20, 0, 30, 10)]
    dets = [((1, 0, 11, 10), 0.7), ((0, 0, 10, 10), 0.9), ((50, 50, 60, 60), 0.8), ((21, 0, 31, 10), 0.95)]
    m = match_detections(dets, truth, [(48, 48, 62, 62)])
    assert [x["score"] for x in m["matches"]] == [0.95, 0.9]  # the better-scored box takes the face
    assert m["false_positives"] == [{"box": [1.0, 0.0, 11.0, 10.0], "score": 0.7}]  # face already taken
    assert m["ignored"] == 1 and m["missed"] == []


def test_rates_helpers():
    assert equal_error(np.array([0.2, 0.3]), np.array([0.7, 0.8])) == {"rate": 0.0, "threshold": 0.5}
    e = equal_error(np.array([0.2, 0.3, 0.65, 0.4]), np.array([0.5, 0.7, 0.8, 0.9]))
    assert e["rate"] == 0.25 and 0.4 <= e["threshold"] < 0.65
    t = threshold_for_far(np.array([0.33, 0.35, 0.5]), 0.01)
    assert t["threshold"] == 0.325 and t["impostors_accepted"] == 0 and not t["measurable"]
    # too few impostors to measure 1%: never above the equal-error point (two people far apart)
    t = threshold_for_far(np.array([0.55, 0.57, 0.59]), 0.01, genuine=np.array([0.1, 0.15]))
    assert t["threshold"] == 0.35 and t["basis"] == "equal_error"
    t = threshold_for_far(np.linspace(0.2, 0.5, 200), 0.01)  # 2 of 200 may pass
    assert 1 <= t["impostors_accepted"] <= 2 and t["measurable"] and t["basis"] == "target_far"
    assert equal_error(np.array([]), np.array([0.5])) is None and threshold_for_far(np.array([]), 0.01) is None


# ---- tune: leave-one-out on an enrolled gallery ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned_gallery(tmp_path_factory, analyzer) -> Gallery:
    tmp = tmp_path_factory.mktemp("tune")
    gallery = Gallery(make_config(tmp), analyzer=analyzer)
    for person in ("John_Salley", "John_Savage", "John_Schneider"):
        gallery.add_photos(person, sorted((JOHNS / person).iterdir())[:5])
    simm = sorted((JOHNS / "John_Simm").iterdir())
    gallery.add_photos("John_Simm", simm[:1])  # one photo only
    # a photo of John Simm filed under John Shimkus: mislabelled
    gallery.add_photos("John_Shimkus", sorted((JOHNS / "John_Shimkus").iterdir())[:4] + simm[-1:])
    yield gallery
    gallery.close()


def test_tune_report_and_warnings(tuned_gallery):
    r = tune_gallery(tuned_gallery)
    assert r["people"] == {"John_Salley": 5, "John_Savage": 5, "John_Schneider": 5, "John_Simm": 1,
                           "John_Shimkus": 5}
    warnings = "\n".join(r["warnings"])
    assert "John_Simm: only 1 usable photo" in warnings
    assert "is closer to John_Simm" in warnings and "far from the rest of John_Shimkus" in warnings
    assert "John_Shimkus and John_Simm are hard to tell apart" in warnings
    assert "John_Salley:" not in warnings
    d = r["distances"]
    assert d["genuine"]["n"] == 20 and d["impostor"]["n"] == 21  # John_Simm's photo has no genuine pair
    assert r["suggested_threshold"] == d["chosen"]["threshold"]
    text = format_tune(r)
    assert f"distance_threshold = {r['suggested_threshold']:.3f}" in text and "[recognition]" in text


def test_tune_clean_gallery_suggests_a_sensible_threshold(tmp_path, analyzer):
    gallery = Gallery(make_config(tmp_path), analyzer=analyzer)
    for person in ("John_Salley", "John_Savage", "John_Schneider"):
        gallery.add_photos(person, sorted((JOHNS / person).iterdir())[:5])
    try:
        r = tune_gallery(gallery)
    finally:
        gallery.close()
    (warning,) = r["warnings"]  # nothing about people or photos
    assert warning.startswith("only 15 impostor distances") and r["closed_set"]["accuracy"] == 1.0
    assert 0.25 <= r["suggested_threshold"] <= 0.45
    assert r["distances"]["eer"]["rate"] == 0.0


@pytest.mark.slow
def test_tune_cli(tmp_path, capsys, analyzer):
    cfg_path = config_file(tmp_path)
    gallery = Gallery(make_config(tmp_path, paths={k: str(tmp_path / k) for k in ("storage", "svm", "faces")}),
                      analyzer=analyzer)
    gallery.add_photos("John_Salley", sorted((JOHNS / "John_Salley").iterdir())[:3])
    gallery.add_photos("John_Savage", sorted((JOHNS / "John_Savage").iterdir())[:3])
    gallery.scan(progress=False)  # embeddings cached: the command only reads them
    gallery.close()
    png = tmp_path / "tune.png"
    assert main(["-q", "-c", str(cfg_path), "tune", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "distance_threshold = 0." in out and png.stat().st_size > 10_000
    assert main(["-q", "-c", str(cfg_path), "tune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["suggested_threshold"] is not None
    from agent.config import load_config
    from agent.evaluation.report import last_reports

    (last,) = last_reports(load_config(cfg_path))  # the last tune, kept with its plot (no --plot needed)
    assert last["kind"] == "tune" and "distance_threshold = 0." in last["text"] and last["plot"] == "tune.png"
    assert last["phone_plot"] == "tune-phone.png"
    assert (tmp_path / "storage" / "reports" / "tune.png").stat().st_size > 10_000
    # keeping reports can be turned off
    cfg_path.write_text(cfg_path.read_text() + '\n[evaluation]\nreports = ""\n')
    assert main(["-q", "-c", str(cfg_path), "tune"]) == 0 and last_reports(load_config(cfg_path)) == []
