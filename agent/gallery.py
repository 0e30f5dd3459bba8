"""The enrolled people: their photos, aligned chips, cached embeddings and the trained classifier.

On disk (root = `[paths] faces`):
    train/raw/<person>/<photo>        the enrollment photos (the only thing a user edits)
    train/aligned/<person>/<sha>.png  the 150x150 chip cut from each usable photo
and in `[paths] storage`: `embeddings.db`, a cache keyed by (photo sha256, embedding backend,
detection settings) so re-running touches only new photos; in `[paths] svm`: the classifier.

A photo is usable when it holds exactly one face, or one face that clearly dominates the others
(`[enrollment] dominance`), of at least `[enrollment] min_face_size` pixels.

Every (re)check of the photos also lists warnings (`Gallery.warnings`, logged, kept in the classifier's
metadata, printed by `face-agent enroll`): the same photo (by hash) enrolled under two people, and photos
closer to another person than to the rest of their own person's photos (mislabelled?).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from agent.config import Config
from agent.files import file_sha256
from agent.vision.classifier import Classifier, ClassifierFileError, leave_one_out, train, train_elsewhere
from agent.vision.images import ImageError, is_image_path, load_image
from agent.vision.recognizer import FaceAnalyzer

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 64
NAME_PUNCTUATION = set(" _-.'")

ENROLLED = "enrolled"
NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
TOO_SMALL = "too_small"
UNREADABLE = "unreadable"
DUPLICATE = "duplicate"


class InvalidNameError(ValueError):
    """A person name that cannot be used as one."""


def validate_person_name(name: str) -> str:
    """The name in NFC form, or InvalidNameError: letters of any script, digits, space, _ - . ' only."""
    if not isinstance(name, str):
        raise InvalidNameError("a person name must be text")
    clean = unicodedata.normalize("NFC", name.strip())
    if not clean:
        raise InvalidNameError("a person name cannot be empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"person name is {len(clean)} characters long, at most {MAX_NAME_LENGTH}")
    if clean in (".", "..") or clean.startswith("."):
        raise InvalidNameError(f"person name {clean!r} cannot start with '.'")
    bad = sorted({c for c in clean if not (c.isalnum() or c in NAME_PUNCTUATION)})
    if bad:
        raise InvalidNameError(f"person name {clean!r} has characters not allowed in a name: {''.join(bad)!r}")
    return clean


@dataclass
class PhotoResult:
    person: str
    path: Path
    status: str  # enrolled | no_face | several_faces | too_small | unreadable | duplicate
    reason: str = ""
    sha256: str = ""
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == ENROLLED

    def to_dict(self) -> dict:
        return {"person": self.person, "path": str(self.path), "status": self.status,
                "reason": self.reason, "sha256": self.sha256, "cached": self.cached}


def enrollment_warnings(results: list[PhotoResult], X: np.ndarray, names: list[str], typical_spread: float
                        ) -> list[str]:
    """Same photo under two people; a photo nearer another person's centroid than its own person's
    (computed without it). `X` / `names`: the training set, one row per result that is ok, in order."""
    out = []
    owners: dict[str, dict[str, str]] = defaultdict(dict)
    for r in results:
        if r.status in (ENROLLED, DUPLICATE) and r.sha256:
            owners[r.sha256].setdefault(r.person, r.path.name)
    for who in owners.values():
        if len(who) > 1:
            out.append("the same photo is enrolled under " + " and ".join(f"{p} ({f})" for p, f in sorted(who.items()))
                       + ": it cannot be both; remove it from the wrong folder")
    people = sorted(set(names))
    if len(people) > 1:
        labels = np.array([people.index(n) for n in names])
        D, _, _ = leave_one_out(X, labels, len(people), typical_spread)
        ok = [r for r in results if r.ok]
        for i, r in enumerate(ok):
            own, nearest = int(labels[i]), int(np.argmin(D[i]))
            if nearest != own and np.isfinite(D[i, own]):
                out.append(f"{r.person}: {r.path.name} is closer to {people[nearest]} ({D[i, nearest]:.3f}) than to "
                           f"{r.person}'s other photos ({D[i, own]:.3f}): mislabelled?")
    return out


class EmbeddingCache:
    """SQLite cache of what enrollment found in each photo, keyed by content hash and settings."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS photos (sha256 TEXT, settings TEXT, status TEXT, reason TEXT, "
            "embedding BLOB, box TEXT, PRIMARY KEY (sha256, settings))")
        self._db.commit()

    def get(self, sha: str, settings: str) -> tuple[str, str, np.ndarray | None] | None:
        with self._lock:
            row = self._db.execute("SELECT status, reason, embedding FROM photos WHERE sha256=? AND settings=?",
                                   (sha, settings)).fetchone()
        if row is None:
            return None
        emb = np.frombuffer(row[2], dtype=np.float32).copy() if row[2] is not None else None
        if row[0] == ENROLLED and (emb is None or emb.shape != (128,)):
            return None  # damaged row: recompute
        return row[0], row[1], emb

    def put(self, sha: str, settings: str, status: str, reason: str, embedding: np.ndarray | None,
            box: list | None) -> None:
        blob = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?)",
                             (sha, settings, status, reason, blob, json.dumps(box)))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Gallery:
    """Enrollment folders + embedding cache + classifier, for one config. Thread-safe."""

    def __init__(self, cfg: Config, analyzer: FaceAnalyzer | None = None, train_in_subprocess: bool = False):
        """`train_in_subprocess`: train the SVMs in a child process (the running agent): dlib holds the
        GIL while it trains, which would stall the video loop for the seconds cross-validation takes."""
        self.cfg = cfg
        self.train_in_subprocess = train_in_subprocess
        self.root = cfg.path("faces") / "train"
        self.raw = self.root / "raw"
        self.aligned = self.root / "aligned"
        self.svm_dir = cfg.path("svm")
        self._analyzer = analyzer
        self._cache: EmbeddingCache | None = None
        self._lock = threading.RLock()
        self.warnings: list[str] = []  # from the last ensure_trained (see enrollment_warnings)

    # ---- lazily built heavy parts ---------------------------------------------------------------
    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer(self.cfg)
        return self._analyzer

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cfg.path("storage") / "embeddings.db")
        return self._cache

    def settings_key(self) -> str:
        """What enrollment results depend on besides the photo itself."""
        d, e = self.cfg.detector, self.cfg.enrollment
        parts = [self.analyzer.embedder.name, d.min_face_size, d.scale_factor, d.thresholds,
                 d.nms_thresholds, e.dominance, e.min_face_size]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    # ---- folders ------------------------------------------------------------------------------
    def person_dir(self, person: str) -> Path:
        return self.raw / validate_person_name(person)

    def people_on_disk(self) -> list[str]:
        if not self.raw.is_dir():
            return []
        out = []
        for d in sorted(self.raw.iterdir()):
            if not d.is_dir():
                continue
            try:
                out.append(validate_person_name(d.name))
            except InvalidNameError as exc:
                log.warning("skipping folder %s: %s", d, exc)
        return out

    def photos_of(self, person: str) -> list[Path]:
        folder = self.person_dir(person)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))

    # ---- enrollment ---------------------------------------------------------------------------
    def process_photo(self, person: str, path: Path, settings: str | None = None) -> tuple[PhotoResult,
                                                                                             np.ndarray | None]:
        """Detect, align and embed one enrollment photo (cached by content hash)."""
        settings = settings or self.settings_key()
        try:
            sha = file_sha256(path)
        except OSError as exc:
            return PhotoResult(person, path, UNREADABLE, f"cannot read: {exc.strerror or exc}"), None
        cached = self.cache.get(sha, settings)
        if cached is not None:
            status, reason, emb = cached
            if status != ENROLLED or self._chip_path(person, sha).is_file():
                return PhotoResult(person, path, status, reason, sha, cached=True), emb
        result, emb, box = self._analyze(person, path, sha)
        self.cache.put(sha, settings, result.status, result.reason, emb, box)
        return result, emb

    def _chip_path(self, person: str, sha: str) -> Path:
        return self.aligned / person / f"{sha[:16]}.png"

    def _analyze(self, person: str, path: Path, sha: str) -> tuple[PhotoResult, np.ndarray | None, list | None]:
        images = self.cfg.images
        try:
            rgb = load_image(path, images.max_pixels, images.max_bytes)
        except ImageError as exc:
            return PhotoResult(person, path, UNREADABLE, str(exc), sha), None, None
        detections = self.analyzer.detect(rgb)
        if not detections:
            return PhotoResult(person, path, NO_FACE, "no face found", sha), None, None
        detections = sorted(detections, key=lambda d: d.area, reverse=True)
        if len(detections) > 1:
            ratio = detections[0].area / max(detections[1].area, 1e-6)
            if ratio < self.cfg.enrollment.dominance:
                return PhotoResult(person, path, SEVERAL_FACES,
                                   f"{len(detections)} faces and none clearly the largest "
                                   f"(area ratio {ratio:.1f} < {self.cfg.enrollment.dominance:g})",
                                   sha), None, None
        face = detections[0]
        side = min(face.width, face.height)
        if side < self.cfg.enrollment.min_face_size:
            return PhotoResult(person, path, TOO_SMALL,
                               f"face is {side:.0f} px, at least {self.cfg.enrollment.min_face_size} needed",
                               sha), None, None
        chips, emb = self.analyzer.embed(rgb, [face])
        chip_path = self._chip_path(person, sha)
        chip_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(chips[0]).save(chip_path)
        reason = "" if len(detections) == 1 else f"largest of {len(detections)} faces"
        return PhotoResult(person, path, ENROLLED, reason, sha), emb[0], [float(v) for v in face.box]

    def scan(self, people: Iterable[str] | None = None, progress: bool = True
             ) -> tuple[list[PhotoResult], np.ndarray, list[str], str]:
        """Process every photo of the given people (default all); returns results and the training set."""
        with self._lock:
            people = list(people) if people is not None else self.people_on_disk()
            jobs = [(p, path) for p in people for path in self.photos_of(p)]
            settings = self.settings_key()
            results: list[PhotoResult] = []
            embeddings: list[np.ndarray] = []
            names: list[str] = []
            seen: set[tuple[str, str]] = set()
            for person, path in tqdm(jobs, desc="enrolling", unit="photo", disable=not progress or not jobs,
                                     leave=False):
                result, emb = self.process_photo(person, path, settings)
                if result.ok and (person, result.sha256) in seen:
                    result = PhotoResult(person, path, DUPLICATE, "same photo as another of this person",
                                         result.sha256, result.cached)
                elif result.ok:
                    seen.add((person, result.sha256))
                    embeddings.append(emb)
                    names.append(person)
                results.append(result)
            X = np.stack(embeddings) if embeddings else np.zeros((0, 128), dtype=np.float32)
            fingerprint = self._fingerprint(sorted(seen))
            return results, X, names, fingerprint

    def _fingerprint(self, items: list[tuple[str, str]]) -> str:
        payload = json.dumps({"photos": items, "settings": self.settings_key()})
        return hashlib.sha256(payload.encode()).hexdigest()

    def add_photos(self, person: str, sources: Iterable[Path]) -> list[Path]:
        """Copy photos into the person's folder (named by content hash); returns the stored paths."""
        folder = self.person_dir(person)
        folder.mkdir(parents=True, exist_ok=True)
        stored = []
        for src in sources:
            src = Path(src)
            try:
                sha = file_sha256(src)
            except OSError as exc:
                raise ImageError(f"{src}: cannot read ({exc.strerror or exc})") from None
            dest = folder / f"{sha[:16]}{src.suffix.lower() or '.jpg'}"
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dest)
            stored.append(dest)
        return stored

    def forget(self, person: str) -> bool:
        """Remove a person's photos and chips; True if they were enrolled."""
        name = validate_person_name(person)
        with self._lock:
            found = False
            for folder in (self.raw / name, self.aligned / name):
                if folder.is_dir():
                    shutil.rmtree(folder)
                    found = True
            return found

    # ---- the classifier -----------------------------------------------------------------------
    def load_classifier(self) -> Classifier | None:
        r = self.cfg.recognition
        try:
            return Classifier.load(self.svm_dir, r)
        except ClassifierFileError as exc:
            log.debug("%s", exc)
            return None

    def ensure_trained(self, force: bool = False, progress: bool = True
                       ) -> tuple[Classifier, list[PhotoResult], bool]:
        """The classifier for the current photos: loaded if its fingerprint matches, else retrained.

        Returns (classifier, per-photo results, whether it was retrained).
        """
        with self._lock:
            results, X, names, fingerprint = self.scan(progress=progress)
            r = self.cfg.recognition
            self.warnings = enrollment_warnings(results, X, names, r.typical_spread)
            for warning in self.warnings:
                log.warning("enrollment: %s", warning)
            existing = None
            try:
                existing = Classifier.load(self.svm_dir, r)
            except ClassifierFileError as exc:
                if (self.svm_dir / "classifier.npz").exists() or (self.svm_dir / "classifier.json").exists():
                    log.warning("retraining: %s", exc)
            if existing is not None and not force and existing.meta.get("fingerprint") == fingerprint:
                return existing, results, False
            if not names:
                log.warning("nobody is enrolled yet: every face will be unknown (add photos to %s)", self.raw)
            args = (X, names, r, fingerprint, {"embedding_backend": self.analyzer.embedder.name,
                                               "warnings": self.warnings})
            clf = train_elsewhere(*args) if self.train_in_subprocess else train(*args)
            clf.save(self.svm_dir)
            return clf, results, True

    def summary(self) -> dict[str, dict]:
        """Per person: photo files on disk and usable (cached) photos, without running any model."""
        clf = self.load_classifier()
        counts = clf.meta.get("counts", {}) if clf else {}
        out = {}
        for person in sorted(set(self.people_on_disk()) | set(counts)):
            out[person] = {"photos": len(self.photos_of(person)), "trained_photos": counts.get(person, 0)}
        return out

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
