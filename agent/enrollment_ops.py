"""Enrollment operations: what `face-agent enroll|forget|rename|restore|people`, the web console's People pages
and remote enrollment over MQTT (agent.sync.enrollment) do to the gallery, decided once here.

The three are adapters: they parse their input (arguments, a form, a signed request), call one function
below and say the outcome in their own words (a line, a flash message, a reply). What an operation means -
which names are valid, what removing the last photo does, what a list of the enrolled people holds, what a
fault on one image does to the others - lives here, so the three cannot disagree:

- `add_images`: images given as bytes (uploads, remote `add`), each checked and stored by the gallery; a
  fault of the agent on one image is that image's refusal (`internal_error`), the others still count.
- `enroll_files`: photo files of the operator's (`face-agent enroll PERSON IMAGE...`), analysed where they are,
  only the enrollable ones copied in.
- `remove_photos`: photos by stored name, stem or sha256. Removing a person's last photo forgets the person
  (`forget`: the photos go to the trash, restorable; what the agent derived from their face is erased): a
  person is enrolled by their photos, and a name left without any would hide a history nobody could list.
- `forget`, `rename`, `restore`, `people`, `model`: the gallery's operations, names checked first.
- `retrain`: `Gallery.ensure_trained`, with the model's typed summary (`ClassifierSummary`). When to retrain
  stays with the adapter (the CLI at once, the web under its training lock, MQTT after its debounce).

Errors are the gallery's: InvalidNameError (a bad name), NotEnrolledError, NameTakenError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from agent.gallery import (
    Gallery,
    ImageAdd,
    InvalidNameError,
    NameTakenError,
    NotEnrolledError,
    PhotoResult,
    Trashed,
    validate_person_name,
)
from agent.images import ImageError
from agent.logsafe import escape
from agent.vision.classifier import Classifier, ClassifierSummary

__all__ = ["InvalidNameError", "NameTakenError", "NotEnrolledError", "validate_person_name", "INTERNAL_ERROR",
           "Enrolled", "Removal", "Training", "add_images", "enroll_files", "remove_photos", "forget", "rename",
           "restore", "people", "model", "retrain"]

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"  # an image refused because the agent failed on it (not the image's fault)


def add_images(gallery: Gallery, person: str, images: list[tuple[str, bytes]], max_bytes: int,
               work_dir: Path) -> list[ImageAdd]:
    """Enroll images given as (file name, bytes) for `person` (Gallery.add_image: caps, format, not somebody
    else's photo, one usable face), in order; one ImageAdd each. The caller retrains when any is `new`."""
    person = validate_person_name(person)
    out = []
    for name, data in images:
        try:
            added = gallery.add_image(person, data, name, max_bytes, work_dir)
        except Exception as exc:  # the agent failed on this image: the images before and after still count
            if not isinstance(exc, ImageError):
                log.exception("enrollment: image %s for %s failed", escape(name), escape(person))
            added = ImageAdd("", False, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300])
        log.info("enrollment: %s for %s: %s", escape(name), escape(person),
                 ("accepted" + (" (new)" if added.new else "")) if added.accepted
                 else f"rejected: {added.reason} ({escape(added.message)})")
        out.append(added)
    return out


@dataclass
class Enrolled:
    """What `enroll_files` did: the photos stored (stored path -> the operator's file), those refused, and the
    content hashes this call analysed first (new to the embedding cache)."""

    stored: dict[Path, Path] = field(default_factory=dict)
    refused: list[PhotoResult] = field(default_factory=list)
    analysed_now: set[str] = field(default_factory=set)


def enroll_files(gallery: Gallery, person: str, files: list[Path], progress: bool = False) -> Enrolled:
    """`face-agent enroll PERSON IMAGE...`: each file analysed where it is first, only an enrollable one copied
    into the person's folder (as <original name>-<sha8>.<ext>). ImageError when a file cannot be copied."""
    person = validate_person_name(person)
    done = Enrolled()
    usable: list[Path] = []
    for src in tqdm(files, desc="analysing", unit="photo", disable=not progress, leave=False):
        result, _ = gallery.process_photo(person, Path(src))
        if not result.cached:
            done.analysed_now.add(result.sha256)
        if result.ok:
            usable.append(Path(src))
        else:
            done.refused.append(result)
    stored = gallery.add_photos(person, usable) if usable else []
    done.stored = dict(zip(stored, usable, strict=True))
    return done


@dataclass
class Removal:
    """What `remove_photos` did: each ref with the photo it named (None: no such photo of the person), the
    photos left, and - when none is left - that the person was forgotten (`trash`: where the photos went)."""

    person: str
    found: list[tuple[str, Path | None]]
    photos_left: int
    forgotten: bool = False
    trash: Path | None = None

    @property
    def removed(self) -> int:
        return sum(1 for _, photo in self.found if photo is not None)


def remove_photos(gallery: Gallery, person: str, refs: list[str]) -> Removal:
    """Remove photos of `person` named by `refs` (stored name, stem or sha256: Gallery.find_photo). When that
    leaves the person no photo, the person is forgotten (`forget`: their photos - these too - go to the trash,
    restorable with `restore`), as the module doc says. NotEnrolledError when the person has no photos."""
    person = validate_person_name(person)
    photos = gallery.photos_of(person)
    if not photos:
        raise NotEnrolledError(f"{person!r} is not enrolled")
    found = [(ref, gallery.find_photo(person, ref)) for ref in refs]
    chosen = {photo for _, photo in found if photo is not None}
    if not chosen:
        return Removal(person, found, len(photos))
    if chosen >= set(photos):  # the last photos: the person goes, through forget (the trash keeps them)
        trash = forget(gallery, person)
        log.info("enrollment: the last photos of %s removed: %s forgotten", escape(person), escape(person))
        return Removal(person, found, 0, forgotten=True, trash=trash)
    for photo in sorted(chosen):
        gallery.remove_photo(person, photo)
    log.info("enrollment: removed %d photo(s) of %s", len(chosen), escape(person))
    return Removal(person, found, len(photos) - len(chosen))


def forget(gallery: Gallery, person: str, purge: bool = False) -> Path | None:
    """Forget `person` everywhere on this agent (Gallery.forget, docs/privacy.md). Returns the trash folder
    (what `restore` brings back), None when no photos were kept (none, or `purge`)."""
    person = validate_person_name(person)
    return gallery.forget(person, purge=purge)  # which logs it, with what was erased


def rename(gallery: Gallery, old: str, new: str) -> bool:
    """Rename a person (photos, chips, negatives, their id and kept faces follow: Gallery.rename). Returns
    whether anything changed (False: the same name)."""
    old, new = validate_person_name(old), validate_person_name(new)
    gallery.rename(old, new)
    if old != new:
        log.info("enrollment: renamed %s to %s", escape(old), escape(new))
    return old != new


def restore(gallery: Gallery, person: str, folder: str | None = None, as_name: str | None = None) -> Trashed:
    """Undo forget: the person's photos back from the trash (the latest forget, or `folder`), under `as_name`
    when given (Gallery.restore). The caller retrains."""
    return gallery.restore(person, folder or None, as_name or None)  # which logs it


def people(gallery: Gallery) -> dict[str, dict[str, int]]:
    """The enrolled people: name -> {"photos": files on disk, "trained_photos": photos the model has}."""
    return gallery.summary()


def model(gallery: Gallery) -> ClassifierSummary | None:
    """The saved classifier's summary, None when there is none (or it cannot be used)."""
    classifier = gallery.load_classifier()
    return classifier.summary if classifier is not None else None


def people_and_model(gallery: Gallery) -> tuple[dict[str, dict[str, int]], ClassifierSummary | None]:
    """`people` and `model` together, the saved classifier read once (remote `list`, the web's People page)."""
    summary = model(gallery)
    return gallery.summary(summary.counts if summary is not None else {}), summary


@dataclass
class Training:
    """What `retrain` did: the classifier now in use, each photo's result, whether it was retrained."""

    classifier: Classifier
    results: list[PhotoResult]
    retrained: bool
    seconds: float  # the whole call (scan + training)

    @property
    def summary(self) -> ClassifierSummary:
        return self.classifier.summary


def retrain(gallery: Gallery, force: bool = False, progress: bool = False) -> Training:
    """The classifier for the photos now enrolled: loaded when it is up to date (unless `force`), else
    trained and saved (Gallery.ensure_trained). The running agent swaps a saved one in."""
    started = time.monotonic()
    classifier, results, retrained = gallery.ensure_trained(force=force, progress=progress)
    return Training(classifier, results, retrained, round(time.monotonic() - started, 3))
