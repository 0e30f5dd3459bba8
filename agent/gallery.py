"""The enrolled people: their photos, aligned chips, cached embeddings and the trained classifier.

On disk (root = `[paths] faces`):
    train/raw/<person>/<photo>        the enrollment photos (the only thing a user edits); photos copied in by
                                      `enroll PERSON FILE` are named <original stem>-<sha8>.<ext>
    train/aligned/<person>/<stem>.png the 150x150 chip cut from each usable photo, named after the photo
                                      (<photo stem>-<sha8>.png; older versions used <sha16>.png: renamed on use)
    train/trash/<person>-<time>/      the photos of a forgotten person (`forget` moves them there; `restore` moves
                                      them back; deleted after `[enrollment] trash_days`, or at once with --purge)
    train/negatives/<person>.npy      embeddings of faces a user said are not that person (`reject`): the
                                      classifier's gate keeps them from being named so again
and in `[paths] storage`: `embeddings.db`, a cache keyed by (photo sha256, embedding backend,
detection settings) so re-running touches only new photos; in `[paths] svm`: the classifier.

A photo is usable when it holds exactly one face, or one face that clearly dominates the others
(`[enrollment] dominance`), of at least `[enrollment] min_face_size` pixels.

Every (re)check of the photos also lists warnings (`Gallery.warnings`, logged, kept in the classifier's
metadata, printed by `face-agent enroll`): the same photo (by hash) enrolled under two people, and photos
closer to another person than to the rest of their own person's photos (mislabelled?).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from agent import database
from agent.config import Config
from agent.files import StorageError, atomic_write, file_sha256, storage_hint, storage_state
from agent.images import ImageError, decode_image, is_image_path, load_image_scaled
from agent.logsafe import escape
from agent.people import People
from agent.sightings import SightingStore
from agent.store import DB_NAME as EVENTS_DB
from agent.store import EventStore
from agent.vision.classifier import Classifier, ClassifierFileError, leave_one_out, train, train_elsewhere
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


_TRASH_NAME = re.compile(r"^(?P<person>.+)-(?P<date>\d{8})-(?P<time>\d{6})(?:-(?P<n>\d+))?$")  # forget's folders


@dataclass(frozen=True)
class Trashed:
    """The photos of one forgotten person in the trash: <faces>/train/trash/<person>-<stamp>[-n]/."""

    person: str
    path: Path
    stamp: str  # YYYYMMDD-HHMMSS, local time of the forget
    n: int  # 2, 3... for a second forget of the same name in the same second
    photos: int


class InvalidNameError(ValueError):
    """A person name that cannot be used as one."""


class NotEnrolledError(LookupError):
    """The person has no folder of photos."""


class NameTakenError(ValueError):
    """The new name of a rename is enrolled already."""


MAX_STEM_LENGTH = 48  # characters of the original file name kept in a copied photo's name


def stored_stem(original: str, sha: str) -> str:
    """`<original stem>-<sha8>`: the name a copied photo gets, so it (and its chip) can be traced back to the
    original file; characters outside letters, digits, `-_.` become `_` (names may come from outside)."""
    stem = unicodedata.normalize("NFC", Path(original).stem)
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._")[:MAX_STEM_LENGTH] or "photo"
    return f"{stem}-{sha[:8]}"


def _carries_hash(stem: str, sha: str) -> bool:
    """The stem already names the content: <stem>-<sha8> (this version) or <sha16> (older versions)."""
    return stem.endswith(f"-{sha[:8]}") or stem == sha[:16]


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
    cached: bool = False  # analysed before (already known): nothing new
    source: Path | None = None  # the file it was copied from (enroll PERSON FILE), else the photo itself

    @property
    def ok(self) -> bool:
        return self.status == ENROLLED

    def to_dict(self) -> dict:
        return {"person": self.person, "path": str(self.path), "source": str(self.source or self.path),
                "status": self.status, "reason": self.reason, "sha256": self.sha256, "cached": self.cached}


CACHE_VERSION = 1  # PRAGMA user_version of the cache's table layout (0: written before layouts had one)
CACHE_COLUMNS = {
    "sha256": str,  # the photo's content hash
    "settings": str,  # embedding backend and detection settings the result holds for
    "status": str,  # enrolled | no_face | several_faces | too_small | unreadable
    "reason": str,
    "embedding": bytes,  # 128 float32, or NULL
    "box": str,  # JSON [left, top, right, bottom] of the face, or null
}


_FILE_PREFIX = re.compile(r"^(?:[^:\n]*[/\\][^:\n]*|[^:/\\\n]+\.[A-Za-z0-9]{2,5}): ")


def _without_file_name(reason: str) -> str:
    """A refusal's reason without the file name it may start with ("/x/fake.jpg: not an image" -> "not an
    image"): reasons are cached by content and shown next to the file they are about."""
    return _FILE_PREFIX.sub("", reason or "", count=1)


def _originals(results: list[PhotoResult]) -> dict[tuple[str, str], Path]:
    """(person, sha256) -> the photo kept when a person's folder holds the same photo several times: the oldest
    file (modification time, then name), i.e. not the copy just added."""
    def age(path: Path) -> tuple[float, str]:
        try:
            return path.stat().st_mtime, path.name
        except OSError:
            return float("inf"), path.name

    out: dict[tuple[str, str], Path] = {}
    for r in results:
        if r.ok and r.sha256:
            key = (r.person, r.sha256)
            if key not in out or age(r.path) < age(out[key]):
                out[key] = r.path
    return out


def _create_cache_tables(db: sqlite_utils.Database) -> None:
    db["photos"].create(CACHE_COLUMNS, pk=("sha256", "settings"), ignore=True)


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


# the formats enrollment stores (as these suffixes); others are refused as UNSUPPORTED_FORMAT
FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "DIB": ".bmp", "GIF": ".gif",
                 "TIFF": ".tif", "WEBP": ".webp", "ICO": ".ico", "PPM": ".ppm"}
UNSUPPORTED_FORMAT = "unsupported_format"  # add_image: not a format enrollment stores
ENROLLED_AS_OTHER = "enrolled_as_other"  # add_image: the same photo is somebody else's


@dataclass
class ImageAdd:
    """What `Gallery.add_image` did with one image: accepted (stored as `stored_as`; `new` when it was not
    there before) or refused (`reason`: unreadable, unsupported_format, enrolled_as_other, or a photo status
    such as no_face; `message` says it for a person)."""

    sha256: str
    accepted: bool
    reason: str | None = None
    message: str | None = None
    stored_as: str | None = None
    new: bool = False


class EmbeddingCache:
    """SQLite cache of what enrollment found in each photo, keyed by content hash and settings."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.degraded = False  # open read-only or exclusive on a full or read-only disk
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._layout(database.connect(path))
        except (OSError, sqlite3.OperationalError) as exc:
            self.degraded = True
            self._db = self._layout(self._open_degraded(exc))
        self._photos = self._db["photos"]

    def _layout(self, conn: sqlite3.Connection) -> sqlite_utils.Database:
        """`conn` as a Database with the cache's table (only checked on a degraded open); closed on error."""
        db = database.database(conn)
        try:
            database.ensure_layout(db, CACHE_VERSION, _create_cache_tables, writable=not self.degraded)
        except database.LayoutError as exc:
            conn.close()
            raise StorageError(f"{self.path}: cannot use the embedding cache: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return db

    def _open_degraded(self, exc: Exception) -> sqlite3.Connection:
        """A full or read-only disk: what is cached stays readable; a photo not cached cannot be enrolled."""
        state = storage_state(self.path.parent)
        if state is None or not self.path.is_file():
            raise StorageError(f"{self.path}: cannot open the embedding cache: {exc} "
                               f"({storage_hint(self.path.parent)})") from None
        try:
            conn, how = database.open_degraded(self.path, state)
        except sqlite3.Error as again:
            raise StorageError(f"{self.path}: cannot open the embedding cache: {again} "
                               f"({storage_hint(self.path.parent)})") from None
        log.warning("%s: the disk is %s: the embedding cache is open %s; photos not analysed before cannot be "
                    "enrolled until it is fixed", self.path, state, how)
        return conn

    def get(self, sha: str, settings: str) -> tuple[str, str, np.ndarray | None] | None:
        with self._lock:
            rows = list(self._photos.rows_where("sha256 = ? AND settings = ?", [sha, settings],
                                                select="status, reason, embedding"))
        if not rows:
            return None
        row = rows[0]
        emb = np.frombuffer(row["embedding"], dtype=np.float32).copy() if row["embedding"] is not None else None
        if row["status"] == ENROLLED and (emb is None or emb.shape != (128,)):
            return None  # damaged row: recompute
        return row["status"], row["reason"], emb

    def put(self, sha: str, settings: str, status: str, reason: str, embedding: np.ndarray | None,
            box: list | None) -> None:
        blob = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
        try:
            with self._lock:
                self._photos.insert({"sha256": sha, "settings": settings, "status": status, "reason": reason,
                                     "embedding": blob, "box": json.dumps(box)}, replace=True)
        except sqlite3.OperationalError as exc:
            raise StorageError(f"{self.path}: cannot store what enrollment found in a photo: {exc} "
                               f"({storage_hint(self.path.parent)})") from None

    def drop(self, shas: Iterable[str]) -> int:
        """Forget what was found in these photos (every settings); rows deleted, overwritten on disk."""
        shas = list(shas)
        if not shas:
            return 0
        with self._lock:
            conn = self._db.conn
            conn.execute("PRAGMA secure_delete = ON")
            try:
                with conn:
                    n = sum(conn.execute("DELETE FROM photos WHERE sha256 = ?", (sha,)).rowcount for sha in shas)
            finally:
                conn.execute("PRAGMA secure_delete = OFF")
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return n

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
        self.trash = self.root / "trash"
        self.negatives_dir = self.root / "negatives"
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
        if self.analyzer.flip:  # other embeddings: re-embedded, and the classifier's fingerprint changes
            parts.append("flip")
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    # ---- folders ------------------------------------------------------------------------------
    def person_dir(self, person: str) -> Path:
        return self.raw / validate_person_name(person)

    def people_on_disk(self) -> list[str]:
        if not self.raw.is_dir():
            return []
        out = []
        for d in sorted(self.raw.iterdir()):
            if not d.is_dir() or not any(p.is_file() and is_image_path(p) for p in d.iterdir()):
                continue  # a person without photos is nobody (e.g. the last one removed by hand)
            try:
                out.append(validate_person_name(d.name))
            except InvalidNameError as exc:
                log.warning("skipping folder %s: %s", escape(d), escape(exc))
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
            if status != ENROLLED or self._chip_ready(person, path, sha):
                # the cache is by content: a refusal cached for another file with the same bytes must not name it
                return PhotoResult(person, path, status, _without_file_name(reason), sha, cached=True), emb
        result, emb, box = self._analyze(person, path, sha)
        result.reason = _without_file_name(result.reason)  # the result names its file (path) already
        self.cache.put(sha, settings, result.status, result.reason, emb, box)
        return result, emb

    def chip_path(self, person: str, path: Path, sha: str) -> Path:
        """The aligned chip of photo `path` (content hash `sha`): named after the photo."""
        if _carries_hash(path.stem, sha):
            stem = path.stem
        elif path.parent == self.raw / person:  # put there by hand, under the user's own name
            stem = f"{path.stem}-{sha[:8]}"
        else:  # not copied yet (CLI enroll analyses it where it is): named as its copy will be, so the chip of
            stem = stored_stem(path.name, sha)  # "my photo.jpg" is the one of my_photo-<sha8>.jpg, not a second
        return self.aligned / person / f"{stem}.png"

    def _chip_ready(self, person: str, path: Path, sha: str) -> bool:
        """The chip is there; one an older version named <sha16>.png is renamed after its photo."""
        chip = self.chip_path(person, path, sha)
        if chip.is_file():
            return True
        legacy = self.aligned / person / f"{sha[:16]}.png"
        if legacy.is_file():
            os.replace(legacy, chip)
            return True
        return False

    def _analyze(self, person: str, path: Path, sha: str) -> tuple[PhotoResult, np.ndarray | None, list | None]:
        images = self.cfg.images
        try:
            rgb, scale = load_image_scaled(path, images.max_pixels, images.max_bytes, images.memory_mb)
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
        side = min(face.width, face.height) / scale  # in the photo's own pixels (a big one is decoded reduced)
        if side < self.cfg.enrollment.min_face_size:
            return PhotoResult(person, path, TOO_SMALL,
                               f"face is {side:.0f} px, at least {self.cfg.enrollment.min_face_size} needed",
                               sha), None, None
        chips, emb = self.analyzer.embed(rgb, [face])
        chip_path = self.chip_path(person, path, sha)
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
            analysed = [self.process_photo(person, path, settings)
                        for person, path in tqdm(jobs, desc="enrolling", unit="photo",
                                                 disable=not progress or not jobs, leave=False)]
            originals = _originals([r for r, _ in analysed])
            for result, emb in analysed:
                original = originals.get((result.person, result.sha256)) if result.ok else None
                if original is not None and original != result.path:
                    result = PhotoResult(result.person, result.path, DUPLICATE,
                                         f"a copy of {original.name} (the older file, which is kept): remove this "
                                         "one", result.sha256, result.cached)
                elif result.ok:
                    seen.add((result.person, result.sha256))
                    embeddings.append(emb)
                    names.append(result.person)
                results.append(result)
            for person in people:
                self._prune_chips(person, [r for r in results if r.person == person])
            X = np.stack(embeddings) if embeddings else np.zeros((0, 128), dtype=np.float32)
            fingerprint = self._fingerprint(sorted(seen))
            return results, X, names, fingerprint

    def _fingerprint(self, items: list[tuple[str, str]]) -> str:
        negatives = {p: hashlib.sha256(a.tobytes()).hexdigest() for p, a in sorted(self.negatives().items())}
        payload = json.dumps({"photos": items, "settings": self.settings_key(),
                              **({"negatives": negatives} if negatives else {})})
        return hashlib.sha256(payload.encode()).hexdigest()

    def add_photos(self, person: str, sources: Iterable[Path], names: Iterable[str] | None = None) -> list[Path]:
        """Copy photos into the person's folder as <original stem>-<sha8>.<ext> (`names`: the original file
        names when `sources` are temporary copies); a photo already there (same content, also under an
        older <sha16> name) is not copied again. Returns the stored paths, in order."""
        folder = self.person_dir(person)
        folder.mkdir(parents=True, exist_ok=True)
        sources = [Path(src) for src in sources]
        names = list(names) if names is not None else [src.name for src in sources]
        present: dict[str, Path] = {}  # content hash -> photo already in the folder, hashed once per call
        for photo in self.photos_of(person):
            with contextlib.suppress(OSError):
                present.setdefault(file_sha256(photo), photo)
        stored = []
        for src, name in zip(sources, names, strict=True):
            try:
                sha = file_sha256(src)
            except OSError as exc:
                raise ImageError(f"{src}: cannot read ({exc.strerror or exc})") from None
            if sha not in present:
                dest = folder / f"{stored_stem(name, sha)}{src.suffix.lower() or '.jpg'}"
                tmp = dest.with_name(f".{dest.name}.tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dest)
                present[sha] = dest
            stored.append(present[sha])
        return stored

    def add_image(self, person: str, data: bytes, name: str, max_bytes: int, work_dir: Path) -> ImageAdd:
        """Enroll one image given as bytes (remote enrollment, uploads): the caps (`max_bytes`, `[images]
        max_pixels`) before anything else opens it, a format enrollment accepts, not already somebody else's
        photo, a usable face; then stored as <name stem>-<sha8>.<ext>. `work_dir`: a private folder for the
        temporary copy. Says what happened; raises only for faults of the agent itself."""
        sha = hashlib.sha256(data).hexdigest()
        images = self.cfg.images
        try:  # first: the caps, before anything else opens it
            decode_image(data, images.max_pixels, min(images.max_bytes, max_bytes), name=name,
                         memory_mb=images.memory_mb)
        except ImageError as exc:
            return ImageAdd(sha, False, UNREADABLE, str(exc))
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            fmt = None
        suffix = FORMAT_SUFFIX.get(fmt or "")
        if suffix is None:
            return ImageAdd(sha, False, UNSUPPORTED_FORMAT, f"{name}: {fmt} images are not accepted for enrollment "
                            f"(use {', '.join(sorted({s.lstrip('.') for s in FORMAT_SUFFIX.values()}))})")
        for other in self.find_photos(sha):
            if other.parent.name != person:
                return ImageAdd(sha, False, ENROLLED_AS_OTHER,
                                f"{name}: this photo is already enrolled as {other.parent.name!r}")
        existing = self.find_photos(sha, person)
        if existing:
            return ImageAdd(sha, True, message="already enrolled", stored_as=existing[0].name)
        tmp = work_dir / f"{uuid.uuid4().hex}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            result, _ = self.process_photo(person, tmp)
            if not result.ok:
                return ImageAdd(sha, False, result.status, f"{name}: {result.reason}")
            stored = self.add_photos(person, [tmp], names=[name or tmp.name])[0]
            chip = self.chip_path(person, tmp, sha)  # cut from the temporary copy: name it after the photo
            if chip.exists():
                chip.replace(self.chip_path(person, stored, sha))
        finally:
            tmp.unlink(missing_ok=True)
        return ImageAdd(sha, True, message=result.reason or None, stored_as=stored.name, new=True)

    def find_photo(self, person: str, ref: str) -> Path | None:
        """The photo of `person` that `ref` names: its file name, its stem, or its content's sha256."""
        for path in self.photos_of(person):
            if not path.exists():
                continue
            if ref in (path.name, path.stem):
                return path
            if len(ref) == 64 and (path.stem == ref[:16] or path.stem.endswith(f"-{ref[:8]}")) \
                    and file_sha256(path) == ref:
                return path
        return None

    def find_photos(self, sha: str, person: str | None = None) -> list[Path]:
        """Photos with content `sha`: every photo of `person`, or (person None) those of anybody stored under
        a name carrying the hash (<stem>-<sha8> or an older version's <sha16>)."""
        if person is not None:
            candidates = self.photos_of(person)
        elif self.raw.is_dir():
            candidates = [*self.raw.glob(f"*/*-{sha[:8]}.*"), *self.raw.glob(f"*/{sha[:16]}.*")]
        else:
            candidates = []
        found = []
        for path in sorted(set(candidates)):
            try:
                if path.is_file() and is_image_path(path) and file_sha256(path) == sha:
                    found.append(path)
            except OSError:
                continue
        return found

    def remove_photo(self, person: str, path: Path) -> None:
        """Delete one photo of a person and its chip. Called by agent.enrollment_ops.remove_photos only for
        photos that are not the person's last: removing the last ones forgets the person instead (`forget`)."""
        with self._lock:
            try:
                sha = file_sha256(path)
            except OSError:
                sha = ""
            path.unlink(missing_ok=True)
            if sha:
                self.chip_path(person, path, sha).unlink(missing_ok=True)
                (self.aligned / person / f"{sha[:16]}.png").unlink(missing_ok=True)

    def _prune_chips(self, person: str, results: list[PhotoResult]) -> None:
        """Delete the person's chips that belong to no photo of theirs (derived files: a photo removed by hand,
        or one enrolled twice under two names)."""
        folder = self.aligned / person
        if not folder.is_dir():
            return
        keep = {self.chip_path(person, r.path, r.sha256).name for r in results if r.sha256}
        keep |= {f"{r.sha256[:16]}.png" for r in results if r.sha256}  # an older version's name, renamed on use
        for chip in folder.glob("*.png"):
            if chip.name not in keep:
                log.info("deleting the chip %s: no photo of %s has it", chip, person)
                chip.unlink(missing_ok=True)

    def forget(self, person: str, purge: bool = False) -> Path | None:
        """Forget a person, everywhere on this agent (docs/privacy.md): their photos move to
        <faces>/train/trash/<person>-<time>/ (kept `[enrollment] trash_days` to undo a mistake, then deleted;
        `purge`: deleted now, with any earlier trash of theirs), the chips and the embedding cache's entries of
        those photos are deleted, so are the faces of them the camera kept and the faces said not to be them
        (agent.sightings, `reject`); their events are erased from the event log (EventStore.forget_person) and
        their name from the kept eval/tune reports. Returns the trash folder (None when nothing is kept), or
        NotEnrolledError if the person has neither photos nor chips (nor, with `purge`, trash)."""
        name = validate_person_name(person)
        with self._lock:
            photos, chips = self.raw / name, self.aligned / name
            if not photos.is_dir() and not chips.is_dir() and not (purge and self._trash_of(name)):
                raise NotEnrolledError(f"{name!r} is not enrolled")
            moved = None
            if photos.is_dir():
                shas = [file_sha256(p) for p in photos.iterdir() if p.is_file()]
                self.cache.drop(shas)
                if any(photos.iterdir()):
                    moved = self._trash_folder(name)
                    moved.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(photos, moved)
                else:
                    photos.rmdir()
            if chips.is_dir():
                shutil.rmtree(chips)
            self._negatives_file(name).unlink(missing_ok=True)
            if purge or self.cfg.enrollment.trash_days == 0:
                for folder in self._trash_of(name):
                    shutil.rmtree(folder)
                moved = None
            person_id = None
            try:
                with People.of(self.cfg) as people:
                    person_id = people.forget(name)
                    if person_id is not None:
                        people.erase_names(person_id)
            except (StorageError, sqlite3.Error) as exc:
                log.error("the people registry could not forget %s: %s", name, exc)
            erased = self._erase_traces(name, person_id)
            log.info("forgot %s%s; %s", name, f"; photos moved to {moved}" if moved else "; no photos kept",
                     ", ".join(f"{v} {k}" for k, v in erased.items()))
            return moved

    def _erase_traces(self, name: str, person_id: str | None) -> dict[str, int]:
        """What the agent derived from `name`'s face outside the gallery: sightings, events, reports."""
        from agent.evaluation.report import redact_reports  # evaluation imports the gallery

        erased = {"sightings deleted": 0, "events deleted": 0, "events anonymised": 0, "reports redacted": 0}
        try:
            store = SightingStore(self.cfg)
            try:
                erased["sightings deleted"] = store.forget(name)
            finally:
                store.close()
        except (StorageError, OSError, sqlite3.Error) as exc:
            log.error("the sightings of %s could not be deleted: %s", name, exc)
        if (self.cfg.path("storage") / EVENTS_DB).is_file():
            try:
                events = EventStore(self.cfg)
                try:
                    done = events.forget_person(name, person_id)
                finally:
                    events.close()
                erased["events deleted"], erased["events anonymised"] = done["deleted"], done["anonymised"]
            except (StorageError, OSError, sqlite3.Error) as exc:
                log.error("the events of %s could not be erased: %s", name, exc)
        erased["reports redacted"] = redact_reports(self.cfg, name)
        return erased

    def _trash_of(self, name: str) -> list[Path]:
        """The trash folders of `name` (<name>-<time>[-n])."""
        return [t.path for t in self.trashed(name)]

    def purge_trash(self, now: float | None = None) -> int:
        """Delete the trash folders older than `[enrollment] trash_days` (by the time in their name); how many."""
        now = time.time() if now is None else now
        limit = now - self.cfg.enrollment.trash_days * 86400
        purged = 0
        for entry in self.trashed():
            try:
                when = time.mktime(time.strptime(entry.stamp, "%Y%m%d-%H%M%S"))
            except ValueError:
                continue
            if when <= limit:
                shutil.rmtree(entry.path, ignore_errors=True)
                purged += 1
                log.info("trash: deleted %s (older than [enrollment] trash_days = %g)", escape(entry.path.name),
                         self.cfg.enrollment.trash_days)
        return purged

    def _trash_folder(self, name: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = self.trash / f"{name}-{stamp}"
        n = 1
        while folder.exists():
            n += 1
            folder = self.trash / f"{name}-{stamp}-{n}"
        return folder

    def rename(self, old: str, new: str) -> None:
        """Rename a person: photos and chips move along (the embedding cache is keyed by content, so it
        follows by itself); the classifier retrains on the next ensure_trained. NotEnrolledError,
        NameTakenError."""
        old, new = validate_person_name(old), validate_person_name(new)
        with self._lock:
            if not (self.raw / old).is_dir():
                raise NotEnrolledError(f"{old!r} is not enrolled")
            if old == new:
                return
            if (self.raw / new).exists() or (self.aligned / new).exists():
                raise NameTakenError(f"{new!r} is already enrolled (forget it first)")
            os.replace(self.raw / old, self.raw / new)
            if (self.aligned / old).is_dir():
                os.replace(self.aligned / old, self.aligned / new)
            if self._negatives_file(old).is_file():
                os.replace(self._negatives_file(old), self._negatives_file(new))
            self._renamed(old, new)

    def _renamed(self, old: str, new: str) -> None:
        """A rename reaches the person's id (agent.people: events logged under the old name are found under
        the new one) and the faces the camera kept of them (unknown people named so, rejections)."""
        try:
            with People.of(self.cfg) as people:
                people.rename(old, new)
        except (StorageError, sqlite3.Error) as exc:
            log.error("the people registry does not know %s is now %s: %s", old, new, exc)
        try:
            store = SightingStore(self.cfg)
            try:
                store.rename_person(old, new)
            finally:
                store.close()
        except (StorageError, OSError, sqlite3.Error) as exc:
            log.error("the sightings of %s could not be renamed to %s: %s", old, new, exc)

    def _register(self, names: Iterable[str]) -> None:
        """The trained people get their stable ids (agent.people)."""
        try:
            with People.of(self.cfg) as people:
                people.register(names)
        except (StorageError, sqlite3.Error) as exc:
            log.error("the people registry could not be updated: %s", exc)

    # ---- negatives: "that was not X" ------------------------------------------------------------
    def _negatives_file(self, person: str) -> Path:
        return self.negatives_dir / f"{validate_person_name(person)}.npy"

    def negatives(self) -> dict[str, np.ndarray]:
        """Person -> (M, 128) embeddings of faces said not to be them (unreadable files are logged, skipped)."""
        out = {}
        if self.negatives_dir.is_dir():
            for path in sorted(self.negatives_dir.glob("*.npy")):
                try:
                    out[validate_person_name(path.stem)] = self._read_negatives(path)
                except (OSError, ValueError, InvalidNameError) as exc:
                    log.warning("%s: cannot read these negatives: %s", escape(path), exc)
        return out

    def negatives_of(self, person: str) -> np.ndarray:
        """`negatives()[person]`, reading that person's file only ((0, 128) when none, or it is unreadable)."""
        path = self._negatives_file(person)
        if path.is_file():
            try:
                return self._read_negatives(path)
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot read these negatives: %s", escape(path), exc)
        return np.zeros((0, 128), np.float32)

    @staticmethod
    def _read_negatives(path: Path) -> np.ndarray:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32).reshape(-1, 128)

    def add_negatives(self, person: str, embeddings: np.ndarray) -> tuple[int, int]:
        """Record faces that are not `person` (kept even if the person is not enrolled yet); the next
        ensure_trained retrains. Returns (how many were not recorded yet, how many are recorded for the person
        now)."""
        with self._lock:
            path = self._negatives_file(person)
            new = np.asarray(embeddings, dtype=np.float32).reshape(-1, 128)
            old = self.negatives_of(person)
            merged = np.unique(np.concatenate([old, new]), axis=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.save(f, merged, allow_pickle=False))
            return len(merged) - len(old), len(merged)

    # ---- the classifier -----------------------------------------------------------------------
    def load_classifier(self) -> Classifier | None:
        r = self.cfg.recognition
        try:
            clf = Classifier.load(self.svm_dir, r)
        except ClassifierFileError as exc:
            log.debug("%s", exc)
            return None
        # embeddings of another kind are never mixed (without loading the models just to ask); a model the
        # gallery trained before [embedding] flip existed has embedding_backend but no embedding_flip: chip only
        flip = self._analyzer.flip if self._analyzer is not None else self.cfg.embedding.flip
        if clf.meta.get("embedding_flip", False if "embedding_backend" in clf.meta else flip) != flip:
            log.warning("the saved classifier was trained with [embedding] flip = %s, this agent embeds with "
                        "%s: it needs retraining", str(not flip).lower(), str(flip).lower())
            return None
        return clf

    def ensure_trained(self, force: bool = False, progress: bool = True
                       ) -> tuple[Classifier, list[PhotoResult], bool]:
        """The classifier for the current photos: loaded if its fingerprint matches, else retrained.

        Returns (classifier, per-photo results, whether it was retrained).
        """
        with self._lock:
            self.purge_trash()  # kept [enrollment] trash_days, then gone (here: every start and retrain)
            results, X, names, fingerprint = self.scan(progress=progress)
            r = self.cfg.recognition
            self.warnings = enrollment_warnings(results, X, names, r.typical_spread)
            for warning in self.warnings:
                log.warning("enrollment: %s", escape(warning, 1000))
            existing = None
            try:
                existing = Classifier.load(self.svm_dir, r)
            except ClassifierFileError as exc:
                if (self.svm_dir / "classifier.npz").exists() or (self.svm_dir / "classifier.json").exists():
                    log.warning("retraining: %s", exc)
            negatives = self.negatives()
            if existing is not None and not force and existing.summary.fingerprint == fingerprint:
                existing.negatives = {p: a for p, a in negatives.items() if p in existing.people}
                self._register(existing.people)
                return existing, results, False
            if not names:
                log.warning("nobody is enrolled yet: every face will be unknown (add photos to %s)", self.raw)
            args = (X, names, r, fingerprint, {"embedding_backend": self.analyzer.embedder.name,
                                               "embedding_flip": self.analyzer.flip,
                                               "warnings": self.warnings})
            if names:
                log.info("training the classifier on %d photos of %d people (cross-validation picks the kernel)",
                         len(names), len(set(names)))
            started = time.monotonic()
            clf = train_elsewhere(*args) if self.train_in_subprocess else train(*args)
            if names:
                log.info("trained in %.1f s", time.monotonic() - started)
            clf.negatives = {p: a for p, a in negatives.items() if p in clf.people}
            clf.save(self.svm_dir)
            self._register(clf.people)
            return clf, results, True

    # ---- undo of forget: restore from the trash (kept apart from forget, which decides what the trash holds)
    def trashed(self, person: str | None = None) -> list[Trashed]:
        """The forgotten people whose photos are in the trash (<faces>/train/trash/<person>-<time>/), newest
        first; only `person`'s when given."""
        found = []
        if self.trash.is_dir():
            for folder in self.trash.iterdir():
                match = _TRASH_NAME.match(folder.name)
                if not folder.is_dir() or match is None or (person is not None and match["person"] != person):
                    continue
                stamp = f"{match['date']}-{match['time']}"
                photos = sum(1 for p in folder.iterdir() if p.is_file())
                found.append(Trashed(match["person"], folder, stamp, int(match["n"] or 1), photos))
        return sorted(found, key=lambda t: (t.stamp, t.n), reverse=True)

    def restore(self, person: str, folder: str | None = None, as_name: str | None = None) -> Trashed:
        """Undo `forget`: move the person's photos back from the trash to <faces>/train/raw/<as_name or
        person>/ (the most recent forget of them, or the trash folder named `folder`); the caller retrains.
        Raises NotEnrolledError when the trash holds no such folder, NameTakenError when that person has
        photos again (restore under another name with as_name)."""
        name = validate_person_name(person)
        target_name = validate_person_name(as_name) if as_name else name
        with self._lock:
            candidates = self.trashed(name)
            if folder is not None:
                candidates = [t for t in candidates if t.path.name == folder]
            if not candidates:
                where = f" named {folder!r}" if folder is not None else ""
                raise NotEnrolledError(f"no forgotten photos of {name!r}{where} in {self.trash}")
            entry = candidates[0]
            target = self.raw / target_name
            if target.is_dir() and any(target.iterdir()):
                raise NameTakenError(f"{target_name!r} has photos again ({target}): restore under another "
                                     "name (--as NAME), then rename or merge by hand")
            if target.is_dir():
                target.rmdir()
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(entry.path, target)
            log.info("restored %s from %s (%d photos)", target_name, entry.path, entry.photos)
            return entry

    def summary(self, trained: dict[str, int] | None = None) -> dict[str, dict]:
        """Per person: photo files on disk and usable (cached) photos, without running any model. `trained`: the
        saved model's counts (ClassifierSummary.counts, {} when there is none) when the caller has read it
        already; None: read here."""
        if trained is None:
            clf = self.load_classifier()
            trained = clf.summary.counts if clf else {}
        counts = trained
        out = {}
        for person in sorted(set(self.people_on_disk()) | set(counts)):
            out[person] = {"photos": len(self.photos_of(person)), "trained_photos": counts.get(person, 0)}
        return out

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
