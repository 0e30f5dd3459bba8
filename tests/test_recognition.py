"""Enrollment, classification and the unknown gate on the real photos with the real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import COMPREFACE, DLIB, FR, SHARED, make_config

from agent.cli import main
from agent.gallery import (
    ENROLLED,
    NO_FACE,
    SEVERAL_FACES,
    UNREADABLE,
    Gallery,
    InvalidNameError,
    validate_person_name,
)
from agent.images import ImageError, load_image
from agent.vision.classifier import Classifier, ClassifierFileError, train
from agent.vision.recognizer import FaceAnalyzer

KNN = FR / "examples" / "knn_examples"
JOHNS = DLIB / "examples" / "johns"
IMGTOOLS = COMPREFACE / "embedding-calculator" / "src" / "services" / "imgtools" / "test" / "files"


def gallery_with(tmp_path: Path, analyzer, photos: dict[str, list[Path]], **sections) -> Gallery:
    cfg = make_config(tmp_path, **sections)
    gallery = Gallery(cfg, analyzer=analyzer)
    for person, paths in photos.items():
        gallery.add_photos(person, paths)
    return gallery


def names_in(analyzer, clf: Classifier, image: Path) -> list[str | None]:
    analyzer.classifier = clf
    return [f.prediction.name for f in analyzer.identify(load_image(image))]


def johns_photos() -> dict[str, list[Path]]:
    """Each John's chips, exact duplicates removed (one John has a duplicate chip)."""
    import hashlib

    out = {}
    for folder in sorted(JOHNS.iterdir()):
        seen, photos = set(), []
        for p in sorted(folder.iterdir()):
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            if h not in seen:
                seen.add(h)
                photos.append(p)
        out[folder.name] = photos
    return out


@pytest.fixture(scope="module")
def knn_gallery(tmp_path_factory, analyzer):
    photos = {d.name: sorted(d.iterdir()) for d in sorted((KNN / "train").iterdir())}
    gallery = gallery_with(tmp_path_factory.mktemp("knn"), analyzer, photos)
    clf, results, retrained = gallery.ensure_trained(progress=False)
    return gallery, clf, results, retrained


def test_knn_enrollment_reports_every_photo(knn_gallery):
    _, clf, results, retrained = knn_gallery
    assert retrained
    assert all(r.status == ENROLLED for r in results), [r.to_dict() for r in results]
    assert clf.people == ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
    assert clf.meta["counts"] == {"alex_lacamoire": 1, "biden": 2, "kit_harington": 2, "obama": 2,
                                  "rose_leslie": 2}


def test_the_classifier_summary_is_its_metadata_typed(knn_gallery):
    """Issue 28.2: ClassifierSummary reads what train() wrote and classifier.json keeps; to_dict round-trips."""
    from agent.vision.classifier import ClassifierSummary

    gallery, clf, _, _ = knn_gallery
    summary = clf.summary
    assert summary.people == tuple(clf.people) and summary.counts == clf.meta["counts"]
    assert summary.fingerprint == clf.meta["fingerprint"] and summary.trained_at == clf.meta["trained_at"]
    cv = clf.meta["cross_validation"]  # none here: alex_lacamoire has one photo
    assert (summary.cv_score, summary.cv_folds, list(summary.cv_grid)) == (cv["balanced_accuracy"], cv["folds"],
                                                                          cv["grid"])
    assert summary.kernel == clf.svm.kernel and summary.warnings == tuple(clf.meta["warnings"])
    assert ClassifierSummary.from_dict(summary.to_dict()) == summary
    assert gallery.load_classifier().summary == summary  # read back from svm/
    assert ClassifierSummary.from_dict({}) == ClassifierSummary()  # an older file without these keys
    assert summary.model_info() == {"people": list(clf.people), "counts": clf.meta["counts"],
                                    "training_s": clf.meta["training_seconds"], "cv_score": summary.cv_score,
                                    "trained_at": clf.meta["trained_at"]}


@pytest.mark.parametrize("image, expected", [
    ("alex_lacamoire1.jpg", {"alex_lacamoire"}),
    ("johnsnow_test1.jpg", {"kit_harington"}),
    ("obama1.jpg", {"obama"}),
    ("kit_with_rose.jpg", {"kit_harington", "rose_leslie"}),
    ("obama_and_biden.jpg", {"obama", "biden"}),
])
def test_knn_test_images_named(knn_gallery, analyzer, image, expected):
    _, clf, _, _ = knn_gallery
    names = names_in(analyzer, clf, KNN / "test" / image)
    named = [n for n in names if n is not None]
    assert sorted(named) == sorted(expected), names  # each enrolled face once; extra faces only unknown


@pytest.mark.parametrize("image, expected", [("obama2.jpg", "obama"), ("obama3.jpg", "obama"),
                                             ("biden.jpg", "biden")])
def test_face_recognition_test_images(knn_gallery, analyzer, image, expected):
    _, clf, _, _ = knn_gallery
    assert names_in(analyzer, clf, FR / "tests" / "test_images" / image) == [expected]


def test_unchanged_photos_do_not_retrain_and_new_ones_do(knn_gallery, analyzer):
    gallery, clf, _, _ = knn_gallery
    again, results, retrained = gallery.ensure_trained(progress=False)
    assert not retrained and all(r.cached for r in results)
    assert again.meta["fingerprint"] == clf.meta["fingerprint"]
    gallery.add_photos("obama", [FR / "tests" / "test_images" / "obama3.jpg"])
    try:
        newer, results, retrained = gallery.ensure_trained(progress=False)
        assert retrained and newer.meta["counts"]["obama"] == 3
        assert sum(not r.cached for r in results) == 1  # only the new photo was analysed
    finally:  # back to the module's enrollment for the other tests
        shutil.rmtree(gallery.person_dir("obama"))
        gallery.add_photos("obama", sorted((KNN / "train" / "obama").iterdir()))
        gallery.ensure_trained(progress=False)


def test_flip_setting_change_reembeds_and_retrains(knn_gallery, analyzer, caplog):
    """A classifier trained on embeddings of another kind ([embedding] flip) is never used with this one's:
    the photos are embedded again and the classifier retrained, and load_classifier refuses it."""
    gallery, clf, _, _ = knn_gallery
    assert not analyzer.flip and clf.meta["embedding_flip"] is False  # the default: chip only
    other_cfg = make_config(gallery.cfg.base_dir, embedding={"flip": True})
    other = Gallery(other_cfg, analyzer=FaceAnalyzer(other_cfg, detector=analyzer.detector,
                                                      embedder=analyzer.embedder))
    try:
        assert other.load_classifier() is None and "needs retraining" in caplog.text
        flipped, results, retrained = other.ensure_trained(progress=False)
        assert retrained and not any(r.cached for r in results)
        assert flipped.meta["embedding_flip"] is True and flipped.people == clf.people
        assert gallery.load_classifier() is None
        assert names_in(other.analyzer, flipped, FR / "tests" / "test_images" / "obama2.jpg") == ["obama"]
    finally:
        again, _, retrained = gallery.ensure_trained(progress=False)
        assert retrained and again.meta["embedding_flip"] is False


def test_open_set_johns_strangers_are_unknown(tmp_path, analyzer):
    johns = johns_photos()
    people = sorted(johns)
    enrolled, strangers = people[:3], people[3:]
    gallery = gallery_with(tmp_path, analyzer, {p: johns[p][:5] for p in enrolled})
    clf, results, _ = gallery.ensure_trained(progress=False)
    assert all(r.ok for r in results)
    assert clf.meta["cross_validation"]["balanced_accuracy"] == 1.0
    for person in people:
        queries = johns[person][5:]
        got = []
        for q in queries:
            got += names_in(analyzer, clf, q)
        expected = person if person in enrolled else None
        assert got == [expected] * len(queries), (person, got)
    assert set(strangers).isdisjoint(clf.people)


def test_class_imbalance_few_photo_people_still_recognised(tmp_path, analyzer):
    """One John with 10 photos, the others with 2: the SVM itself must still vote for the few."""
    johns = johns_photos()
    people = sorted(johns)
    big = people[0]
    photos = {big: johns[big][:10], **{p: johns[p][:2] for p in people[1:]}}
    gallery = gallery_with(tmp_path, analyzer, photos)
    clf, _, _ = gallery.ensure_trained(progress=False)
    assert clf.svm is not None and clf.meta["counts"][big] == 10
    for person in people[1:]:
        analyzer.classifier = clf
        for q in johns[person][2:8]:
            (face,) = analyzer.identify(load_image(q))
            assert face.prediction.name == person, (person, q.name, face.prediction)
            assert face.prediction.svm_name == person, (person, q.name, face.prediction)


def test_single_person_single_photo(tmp_path, analyzer):
    johns = johns_photos()
    people = sorted(johns)
    gallery = gallery_with(tmp_path, analyzer, {people[0]: johns[people[0]][:1]})
    clf, _, _ = gallery.ensure_trained(progress=False)
    assert clf.people == [people[0]] and clf.svm is None
    assert names_in(analyzer, clf, johns[people[0]][3]) == [people[0]]
    assert names_in(analyzer, clf, johns[people[1]][3]) == [None]


def test_two_people_one_photo_each(tmp_path, analyzer):
    johns = johns_photos()
    a, b = sorted(johns)[:2]
    gallery = gallery_with(tmp_path, analyzer, {a: johns[a][:1], b: johns[b][:1]})
    clf, _, _ = gallery.ensure_trained(progress=False)
    assert clf.svm is not None and clf.meta["cross_validation"]["folds"] == 0
    assert names_in(analyzer, clf, johns[a][4]) == [a]
    assert names_in(analyzer, clf, johns[b][4]) == [b]


def test_enrollment_outcomes_per_photo(tmp_path, analyzer):
    samples = COMPREFACE / "embedding-calculator" / "sample_images"
    photos = {"someone": [DLIB / "examples" / "faces" / "dogs.jpg", samples / "000_5.jpg",
                          IMGTOOLS / "corrupted.png", IMGTOOLS / "truncated.jpg", IMGTOOLS / "empty.png",
                          FR / "tests" / "test_images" / "obama.jpg"]}
    gallery = gallery_with(tmp_path, analyzer, photos)
    clf, results, _ = gallery.ensure_trained(progress=False)
    by_source = {r.sha256[:16]: r for r in results}
    import hashlib

    def result(p: Path):
        return by_source[hashlib.sha256(p.read_bytes()).hexdigest()[:16]]

    assert result(DLIB / "examples" / "faces" / "dogs.jpg").status == NO_FACE
    several = result(samples / "000_5.jpg")
    assert several.status == SEVERAL_FACES and "5 faces" in several.reason
    for bad in ("corrupted.png", "truncated.jpg", "empty.png"):
        r = result(IMGTOOLS / bad)
        assert r.status == UNREADABLE and r.reason, r
    assert result(FR / "tests" / "test_images" / "obama.jpg").status == ENROLLED
    assert clf.meta["counts"] == {"someone": 1}
    # failures are cached too: a second run analyses nothing
    _, again, retrained = gallery.ensure_trained(progress=False)
    assert not retrained and all(r.cached for r in again)


def test_corrupt_or_incompatible_classifier_is_retrained(knn_gallery, caplog):
    gallery, clf, _, _ = knn_gallery
    model = gallery.svm_dir / "classifier.npz"
    original = model.read_bytes()
    try:
        model.write_bytes(original[: len(original) // 2])
        with pytest.raises(ClassifierFileError):
            Classifier.load(gallery.svm_dir)
        fixed, _, retrained = gallery.ensure_trained(progress=False)
        assert retrained and fixed.people == clf.people
        assert "retraining" in caplog.text
        meta = json.loads((gallery.svm_dir / "classifier.json").read_text())
        meta["format_version"] = 999
        (gallery.svm_dir / "classifier.json").write_text(json.dumps(meta))
        _, _, retrained = gallery.ensure_trained(progress=False)
        assert retrained
    finally:
        gallery.ensure_trained(force=True, progress=False)


def test_saved_classifier_predicts_like_the_trained_one(tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 128))
    centers *= 1.4 / np.linalg.norm(centers, axis=1, keepdims=True)  # dlib embeddings are ~1.4 long
    X = np.concatenate([c + rng.normal(scale=0.02, size=(6, 128)) for c in centers])
    names = [n for n in ("ann", "bob", "cy") for _ in range(6)]
    cfg = make_config(tmp_path, recognition={"kernel": "rbf"})
    clf = train(X, names, cfg.recognition, fingerprint="x")
    assert clf.svm.kernel == "rbf"
    clf.save(tmp_path / "svm")
    loaded = Classifier.load(tmp_path / "svm")
    a, b = clf.predict(X), loaded.predict(X)
    assert [p.name for p in a] == [p.name for p in b] == names
    assert loaded.meta["fingerprint"] == "x" and "dlib" in loaded.meta["versions"]


def test_svm_matches_dlib_decision_function():
    """Our numpy evaluation of the saved SVM equals dlib's own decision function."""
    import dlib

    from agent.vision.classifier import _dlib_train, train_svm

    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 128)) * 0.1
    y = np.array([0] * 8 + [1] * 12)
    for kernel in ("linear", "rbf"):
        model = train_svm(X, y, 2, kernel, 10.0, 4.0)
        df = _dlib_train(X, y == 0, kernel, 10.0, 4.0)
        ours = model.scores(X)[:, 0]
        theirs = np.array([df(dlib.vector(r.tolist())) for r in X])
        np.testing.assert_allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("name", ["Zoë Ångström", "李小龙", "O'Brien", "anne-marie_2", "Dr. Who"])
def test_valid_person_names(name):
    assert validate_person_name(f"  {name} ") == name


@pytest.mark.parametrize("name", ["", "  ", ".", "..", "../etc", "a/b", "a\\b", ".hidden", "x" * 65,
                                  "nul\x00byte", "tab\tname", "semi;colon"])
def test_invalid_person_names(name):
    with pytest.raises(InvalidNameError):
        validate_person_name(name)


@pytest.mark.slow
def test_cli_enroll_identify_people_forget(tmp_path, capsys):
    (tmp_path / "agent.toml").write_text('[paths]\nfaces = "faces"\n')
    cfg_path = str(tmp_path / "agent.toml")
    obama = sorted((KNN / "train" / "obama").iterdir())
    assert main(["-q", "-c", cfg_path, "enroll", "obama", *map(str, obama)]) == 0
    biden = sorted((KNN / "train" / "biden").iterdir())
    assert main(["-q", "-c", cfg_path, "enroll", "--json", "biden", *map(str, biden)]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(out)["people"] == {"biden": 2, "obama": 2}
    assert main(["-q", "-c", cfg_path, "enroll", "bad/name", str(obama[0])]) == 2
    capsys.readouterr()
    two = KNN / "test" / "obama_and_biden.jpg"
    assert main(["-q", "-c", cfg_path, "identify", "--json", str(two), str(IMGTOOLS / "empty.png")]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert sorted(f["name"] for f in lines[0]["faces"] if f["name"]) == ["biden", "obama"]
    face = lines[0]["faces"][0]
    assert {"box", "landmarks", "confidence", "distance", "score"} <= set(face)
    assert "empty" in lines[1]["error"]
    assert main(["-q", "-c", cfg_path, "people", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"biden": {"photos": 2, "trained_photos": 2},
                                                   "obama": {"photos": 2, "trained_photos": 2}}
    assert main(["-q", "-c", cfg_path, "forget", "biden"]) == 0
    assert main(["-q", "-c", cfg_path, "forget", "biden"]) == 1
    capsys.readouterr()
    assert main(["-q", "-c", cfg_path, "identify", "--json", str(two)]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert sorted(f["name"] for f in faces if f["name"]) == ["obama"]


def shared_images() -> list[Path]:
    """Every still image under ../shared/faces except the 1,440 lfw-subset photos (bench_openset.py compares
    the embedders on those)."""
    return sorted(p for p in SHARED.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                  and "lfw-subset" not in p.parts)


@pytest.mark.slow
def test_identities_identical_with_dlib_and_onnxruntime_embeddings(tmp_path, analyzer):
    """On every shared photo the converted ResNet (default) and dlib's own give the same names, unknowns
    (with their reasons) and distances: detection and alignment are shared, only the embedder differs."""
    from agent.vision.recognizer import FaceAnalyzer

    assert analyzer.embedder.name == "onnxruntime"
    reference = FaceAnalyzer(make_config(tmp_path / "dlib", embedding={"backend": "dlib"}),
                             detector=analyzer.detector)
    johns = johns_photos()
    people = sorted(johns)
    photos = {p: johns[p][:3] for p in people[:3]}
    photos.update({d.name: sorted(d.iterdir()) for d in sorted((KNN / "train").iterdir())})
    openface = SHARED / "openface" / "images" / "examples"
    photos.update({"lennon": [openface / "lennon-1.jpg"], "clapton": [openface / "clapton-1.jpg"]})
    classifiers = {name: gallery_with(tmp_path / name, which, photos).ensure_trained(progress=False)[0]
                   for name, which in (("onnxruntime", analyzer), ("dlib", reference))}
    outcomes: dict[str, list] = {"onnxruntime": [], "dlib": []}
    images = 0
    for path in shared_images():
        try:
            rgb = load_image(path)
        except ImageError:
            continue
        images += 1
        detections = analyzer.detect(rgb)
        if not detections:
            continue
        chips, in_frame = analyzer.aligner.chips_in_frame(rgb, [d.box for d in detections])
        for name, which in (("onnxruntime", analyzer), ("dlib", reference)):
            predictions = which.predict(rgb, detections, which.embedder.embed(chips), in_frame, classifiers[name])
            outcomes[name] += [(path.name, p.name, p.reason, p.distance) for p in predictions]
    assert images >= 120 and len(outcomes["dlib"]) >= 180
    assert [o[:3] for o in outcomes["onnxruntime"]] == [o[:3] for o in outcomes["dlib"]]
    names = [o[1] for o in outcomes["dlib"]]
    assert any(n is None for n in names) and len({n for n in names if n}) >= 8
    np.testing.assert_allclose([o[3] for o in outcomes["onnxruntime"]], [o[3] for o in outcomes["dlib"]],
                               atol=1e-4)
