"""Face tracks across frames, when to recognise each one, and its voted identity.

`Tracker.update(detections, image, timestamp)` once per processed frame:
- association: every track predicts its box with a constant-velocity model (an alpha-beta filter on the
  four box coordinates); detections are matched to predictions greedily, highest IoU first, down to
  `iou_threshold`. Unmatched detections start tentative tracks; a tentative track that misses a frame is
  dropped, one with `min_hits` detections is confirmed (and gets its id: 1, 2, 3... in confirmation order).
  A confirmed track coasts on its prediction through `max_missed` frames without a detection, then ends.
- scheduling: the update lists the confirmed tracks to embed now - a new track at once, then every
  `settle_embed_every` frames for its first `[voting] min_votes` + 1 votes while it is unsettled (one more
  than a name needs, so that one early vote that disagrees, e.g. the blurred frame of a cut, is outvoted on
  the next frame, not `embed_every` frames later) as long as every embedding voted, then every
  `embed_every` frames or as soon as the face is clearly larger (`reembed_area`) or sharper
  (`reembed_sharpness`) than the best one embedded so far, until its identity is settled (or declared
  unknown); after that every `settled_embed_every` frames (an unknown track whose latest vote was for a name
  or came within `near_miss_confidence` of one: every `near_miss_embed_every` frames). Faces smaller than
  `min_face_size` or blurrier than `min_sharpness` (variance of the Laplacian of the grey face resized to
  64x64) are never embedded.
- identity: the pipeline feeds each recognition back with `add_prediction()`, which votes
  (`agent.vision.voting`) and returns an `IdentityChange` exactly once per change: first name
  ("identified"), another name ("changed"), or "unknown" (by the votes, or after `max_attempts`
  predictions without a settled name).

A track is one person, and positions alone cannot promise that (a shot cut, somebody stepping into
another's place, two faces crossing). So the tracker also watches what the face looks like:
- appearance: every embedding of a track goes through `verify()` first. The track keeps its last
  `APPEARANCE_MEMORY` embeddings; a new one farther than `split_distance` from all of them (and not named
  by the classifier as the track's own settled name, which verifies a big change of pose) splits the track:
  the old track ends with its name, a new track (new id, empty ballot) starts on the same box with that
  embedding as its first vote. Votes are only ever about one person.
- cheap checks on every frame: a scene cut (`check_scene()`: the whole frame's grey 32x18 thumbnail
  changed by more than `cut_threshold` on average) ends every track. A track whose box jumps away from
  its prediction (`jump_ratio`), changes size abruptly (`resize_ratio`), whose face suddenly looks
  different from the frame before (`look_threshold`: correlation of 16x16 grey thumbnails), or that
  misses its detection (coasting) becomes *unverified*: it shows no name (`shown_status` is pending) and
  is embedded as soon as its face is seen; the embedding either verifies it (the name shows again) or
  splits it. Verified tracks are re-checked every `settled_embed_every` frames, which also catches a
  change the cheap checks missed.

Everything counts in processed frames, not seconds; timestamps only date the tracks.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from agent.config import TrackerSection, VotingSection
from agent.vision.shrink import shrink
from agent.vision.voting import Ballot

log = logging.getLogger(__name__)

POSITION_GAIN = 0.7  # alpha: share of the measured box in the new box (the rest is the prediction)
VELOCITY_GAIN = 0.3  # beta: share of the prediction error added to the velocity
COAST_DECAY = 0.7  # velocity kept per frame while a track coasts without a detection
SHARPNESS_SIDE = 64  # px: faces are resized to this square before measuring sharpness
LOOK_SIDE = 16  # px: the grey face thumbnail compared between frames (cheap appearance check)
SCENE_SIZE = (32, 18)  # px (w, h): the grey whole-frame thumbnail compared between frames (shot cuts)
APPEARANCE_MEMORY = 8  # recent verified embeddings a track keeps; a new one is compared with the nearest

PENDING, NAMED, UNKNOWN = "pending", "named", "unknown"  # Track.status


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4); boxes x1, y1, x2, y2 with x2 - x1 = width."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs, highest IoU first, each row and column used once, IoU >= threshold."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def face_sharpness(image: np.ndarray, box: Sequence[float]) -> float:
    """Variance of the Laplacian of the grey face crop resized to 64x64 (higher = sharper; 0 if empty)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    shrink = min(grey.shape) > SHARPNESS_SIDE
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_look(image: np.ndarray, box: Sequence[float]) -> np.ndarray | None:
    """The face's 16x16 grey thumbnail, zero mean and unit norm (None if the box is empty): two looks'
    dot product is their normalised correlation, 1 for the same picture, lower as the face changes."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    crop = cv2.resize(image[y1:y2, x1:x2], (LOOK_SIDE, LOOK_SIDE), interpolation=cv2.INTER_AREA)
    grey = crop.astype(np.float32).mean(axis=2) if crop.ndim == 3 else crop.astype(np.float32)
    grey = grey.ravel() - grey.mean()
    norm = float(np.linalg.norm(grey))
    return grey / norm if norm > 1e-6 else None


def scene_signature(image: np.ndarray) -> np.ndarray:
    """The whole frame as a 32x18 grey thumbnail (float, 0..255) for shot-cut detection."""
    small = shrink(image, SCENE_SIZE).astype(np.float32)  # via halvings where it can: 0.5 ms at 720p, not 1
    return small.mean(axis=2) if small.ndim == 3 else small


@dataclass(eq=False)  # compared by identity: a track is one object for its whole life
class Track:
    """One face followed across frames. `box` is the filtered box; `detection` the last matched Detection.
    The tracker updates its tracks in place: read what you need before the next update()."""

    box: np.ndarray
    detection: Any
    first_seen: float
    last_seen: float
    ballot: Ballot
    id: int = 0  # 0 while tentative; 1, 2, 3... from confirmation on
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    age: int = 1  # frames since the first detection
    hits: int = 1  # frames with a matched detection
    missed: int = 0  # consecutive frames without one
    confirmed: bool = False
    best_quality: float = 0.0  # best face quality (0..1) seen while confirmed
    status: str = PENDING  # pending | named | unknown
    name: str | None = None  # the identity while status is "named"
    attempts: int = 0  # predictions received
    cut_off: int = 0  # ... of them of a face cut off by the frame's edge (not counted towards max_attempts)
    scheduled: int = 0  # embeddings scheduled
    last_embed_frame: int = 0  # tracker frame of the last scheduled embedding
    embedded_area: float = 0.0  # largest face area scheduled so far
    embedded_sharpness: float = 0.0  # sharpest face scheduled so far
    embed_quality: float = 0.0  # quality of the face scheduled last (add_prediction's default)
    embeddings: list = field(default_factory=list)  # recent verified embeddings (the face this track is)
    verified: bool = False  # the face now was confirmed by an embedding to be the track's person
    unverified_by: str = "new"  # why it is not verified: new | coasting | jump | resize | look
    look: np.ndarray | None = None  # face thumbnail (face_look) on the last frame with a detection

    @property
    def duration(self) -> float:
        return self.last_seen - self.first_seen

    @property
    def shown_status(self) -> str:
        """What may be shown and published now: the status, but a name only on a verified face (a named track
        whose face is unverified shows pending)."""
        return PENDING if self.status == NAMED and not self.verified else self.status

    @property
    def shown_name(self) -> str | None:
        """The name that may be shown on the current face (None unless named and verified)."""
        return self.name if self.verified and self.status == NAMED else None

    @property
    def coasting(self) -> bool:
        """No detection on this frame: the box is the motion prediction."""
        return self.missed > 0

    @property
    def confidence(self) -> float:
        """Best certainty among the votes for the current outcome (0 when there is none)."""
        total = self.ballot.totals.get(self.name if self.status == NAMED else None)
        return total.best_certainty if total and self.status != PENDING else 0.0

    @property
    def votes(self) -> int:
        """Votes (over the track's life) for the current outcome."""
        total = self.ballot.totals.get(self.name if self.status == NAMED else None)
        return total.count if total and self.status != PENDING else 0

    def __repr__(self) -> str:
        box = ",".join(str(round(float(v))) for v in self.box)
        return (f"Track(id={self.id}, box=[{box}], hits={self.hits}, missed={self.missed}, "
                f"status={self.status}, name={self.name!r}, attempts={self.attempts})")

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for events."""
        return {"track_id": self.id, "name": self.name, "status": self.status,
                "first_seen": self.first_seen, "last_seen": self.last_seen,
                "duration": round(self.duration, 3), "confidence": round(self.confidence, 4),
                "votes": self.votes, "predictions": self.attempts, "hits": self.hits, "verified": self.verified,
                "best_quality": round(self.best_quality, 3),
                "box": [round(float(v), 1) for v in self.box]}


@dataclass(frozen=True, eq=False)
class EmbedRequest:
    """A track to recognise on this frame: embed `detection` and call add_prediction(track.id, ...)."""

    track: Track
    detection: Any
    size: float  # min(width, height) of the face, px
    sharpness: float | None  # None when update() got no image
    quality: float  # 0..1, the default weight factor of the resulting vote
    verify_only: bool = False  # a face below min_face_size: it may only verify its track (Tracker.reverify)


@dataclass(frozen=True, eq=False)
class IdentityChange:
    """What add_prediction() changed: kind "identified" (a first name, or a name after unknown),
    "changed" (another name) or "unknown"."""

    track: Track
    kind: str
    name: str | None  # the new name (None when unknown)
    previous: str | None  # the name before (None when there was none)
    previous_status: str  # pending | named | unknown
    confidence: float  # best certainty of the votes for the new outcome
    votes: int  # votes for the new outcome over the track's life


@dataclass
class TrackerUpdate:
    frame: int  # tracker frame number (1 for the first update)
    timestamp: float
    tracks: list[Track]  # confirmed live tracks, including ones coasting without a detection now
    started: list[Track]  # confirmed on this frame
    to_embed: list[EmbedRequest]  # recognise these now
    ended: list[Track]  # confirmed tracks that ended on this frame (final identity in name/status)


def _nearest(track: Track, embedding: np.ndarray) -> float:
    """Distance from `embedding` to the nearest of the track's remembered embeddings."""
    return float(np.min(np.linalg.norm(np.asarray(track.embeddings) - embedding, axis=1)))


def _mark_verified(track: Track, how: str) -> None:
    if not track.verified:
        log.debug("track %d verified%s (was %s)", track.id, how, track.unverified_by)
    track.verified = True
    track.unverified_by = ""


class Tracker:
    """Tracks faces across frames; see the module docstring. `tracker`/`voting`: agent.config sections."""

    def __init__(self, tracker: TrackerSection, voting: VotingSection, ids: Iterator[int] | None = None):
        """`tracker`, `voting`: the config sections, whose ranges agent.config checked. `ids`: where track ids
        come from (one counter shared by the cameras of an agent keeps them unique; default 1, 2, ...)."""
        t = tracker
        self.cfg = t
        self.voting = voting
        self.frame = 0
        self._tracks: list[Track] = []  # tentative and confirmed, oldest first
        self._ids = itertools.count(1) if ids is None else ids
        self._scene: np.ndarray | None = None  # scene_signature of the previous frame
        self._cut_ended: list[Track] = []  # confirmed tracks ended by a cut, reported by the next update
        self._update: TrackerUpdate | None = None  # the current frame's update (splits are added to it)
        self.cuts = 0  # scene cuts seen
        self.splits = 0  # tracks split because the face was somebody else

    # ---- queries -----------------------------------------------------------------------------------------

    @property
    def tracks(self) -> list[Track]:
        """Confirmed live tracks."""
        return [t for t in self._tracks if t.confirmed]

    @property
    def following(self) -> bool:
        """Any live track, tentative or confirmed."""
        return bool(self._tracks)

    def get(self, track_id: int) -> Track | None:
        """The live confirmed track with this id, or None (never existed, or ended)."""
        return next((t for t in self._tracks if t.confirmed and t.id == track_id), None)

    def predicted_boxes(self) -> np.ndarray:
        """Where every live track (tentative ones too) is expected on the next frame: (N, 4) x1, y1, x2, y2."""
        return np.array([t.box + t.velocity for t in self._tracks], dtype=np.float64).reshape(-1, 4)

    def quality(self, size: float, sharpness: float | None) -> float:
        """Face quality 0..1 from its size and sharpness (1 = as good as recognition gets)."""
        q = min(1.0, size / self.cfg.full_quality_size)
        if sharpness is not None:
            q *= min(1.0, sharpness / self.cfg.full_quality_sharpness)
        return max(0.0, q)

    # ---- per frame ---------------------------------------------------------------------------------------

    def update(self, detections: Sequence[Any], image: np.ndarray | None = None,
               timestamp: float | None = None, start_min_score: float = 0.0) -> TrackerUpdate:
        """Advance one processed frame. `detections`: agent.vision.mtcnn.Detection (anything with x1, y1,
        x2, y2 via .box); `image`: the (H, W, 3) RGB frame they came from (sharpness; None skips the
        sharpness test); `timestamp`: seconds since the epoch (default: now); `start_min_score`: a
        detection that matches no track starts one only if its score is at least this (weaker ones can
        only continue existing tracks)."""
        self.frame += 1
        now = time.time() if timestamp is None else float(timestamp)
        c = self.cfg
        detections = list(detections)
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        predicted = np.array([t.box + t.velocity for t in self._tracks], dtype=np.float64).reshape(-1, 4)
        pairs = greedy_match(iou_matrix(predicted, boxes), c.iou_threshold)
        matched_tracks = dict(pairs)
        matched_dets = {col for _, col in pairs}

        started: list[Track] = []
        ended: list[Track] = []
        keep: list[Track] = []
        for i, track in enumerate(self._tracks):
            track.age += 1
            if i in matched_tracks:
                det = detections[matched_tracks[i]]
                if track.confirmed:
                    self._check_continuity(track, boxes[matched_tracks[i]], predicted[i], image)
                error = boxes[matched_tracks[i]] - predicted[i]
                track.box = predicted[i] + POSITION_GAIN * error
                track.velocity = track.velocity + VELOCITY_GAIN * error
                track.detection = det
                track.hits += 1
                track.missed = 0
                track.last_seen = now
                if not track.confirmed and track.hits >= c.min_hits:
                    self._confirm(track)
                    started.append(track)
                keep.append(track)
                continue
            track.box = predicted[i]
            track.velocity = track.velocity * COAST_DECAY
            track.missed += 1
            if not track.confirmed:
                continue  # a tentative track must be seen on consecutive frames
            self._unverify(track, "coasting")  # no face under the box: nobody to show a name on
            if track.missed > c.max_missed:
                ended.append(track)
                log.debug("track %d ended: %s %s after %.1f s", track.id, track.status, track.name, track.duration)
                continue
            keep.append(track)

        for j, det in enumerate(detections):
            if j in matched_dets or getattr(det, "score", 1.0) < start_min_score:
                continue
            track = Track(box=boxes[j].copy(), detection=det, first_seen=now, last_seen=now,
                          ballot=self._ballot())
            if c.min_hits <= 1:
                self._confirm(track)
                started.append(track)
            keep.append(track)
        self._tracks = keep

        to_embed = []
        for track in self._tracks:
            if track.confirmed and track.missed == 0:
                request = self._schedule(track, image)
                if request is not None:
                    to_embed.append(request)
        ended = self._cut_ended + ended
        self._cut_ended = []
        self._update = TrackerUpdate(frame=self.frame, timestamp=now, tracks=self.tracks, started=started,
                                     to_embed=to_embed, ended=ended)
        return self._update

    def check_scene(self, image: np.ndarray) -> bool:
        """Call once per frame before detecting: True on a shot cut or a sudden change of the whole scene
        (mean absolute change of the grey 32x18 thumbnail above `cut_threshold`). A cut ends every track
        (the next update() reports the confirmed ones as ended): nobody on the new picture is verified
        to be anybody from the old one."""
        scene = scene_signature(image)
        previous, self._scene = self._scene, scene
        if previous is None or previous.shape != scene.shape:
            return False
        change = float(np.abs(scene - previous).mean())
        if change <= self.cfg.cut_threshold:
            return False
        self.cuts += 1
        self._cut_ended.extend(t for t in self._tracks if t.confirmed)
        log.debug("scene cut (change %.1f): %d tracks ended", change, len(self._tracks))
        self._tracks = []
        return True

    def _check_continuity(self, track: Track, box: np.ndarray, predicted: np.ndarray,
                          image: np.ndarray | None) -> None:
        """The cheap per-frame checks of a confirmed track that matched a detection: is it still the face of
        the frame before? If not, the track becomes unverified until an embedding says."""
        c = self.cfg
        size = max(1.0, float(min(predicted[2] - predicted[0], predicted[3] - predicted[1])))
        new_size = float(min(box[2] - box[0], box[3] - box[1]))
        jump = float(np.hypot((box[0] + box[2] - predicted[0] - predicted[2]) / 2,
                              (box[1] + box[3] - predicted[1] - predicted[3]) / 2))
        look, track.look = track.look, face_look(image, box) if image is not None else None
        if jump > c.jump_ratio * size:
            self._unverify(track, "jump")
        elif not 1.0 / c.resize_ratio <= new_size / size <= c.resize_ratio:
            self._unverify(track, "resize")
        elif look is not None and track.look is not None and float(look @ track.look) < c.look_threshold:
            self._unverify(track, "look")

    @staticmethod
    def _unverify(track: Track, reason: str) -> None:
        if track.verified:
            track.verified = False
            track.unverified_by = reason
            log.debug("track %d unverified: %s", track.id, reason)

    def _near_miss(self, track: Track) -> bool:
        """The track's latest vote was for a name, or unknown within near_miss_confidence of one."""
        last = track.ballot.votes[-1] if track.ballot.votes else None
        return last is not None and (last.name is not None or last.confidence >= self.cfg.near_miss_confidence)

    def _ballot(self) -> Ballot:
        v = self.voting
        return Ballot(v.window, v.min_votes, v.hysteresis, v.unknown_hysteresis, v.single_vote_certainty,
                      v.small_face_votes)

    def _confirm(self, track: Track) -> None:
        track.confirmed = True
        track.id = next(self._ids)
        log.debug("track %d started at %s", track.id, [round(float(v)) for v in track.box])

    def _schedule(self, track: Track, image: np.ndarray | None) -> EmbedRequest | None:
        """Measure the track's current face; an EmbedRequest if it is due for recognition."""
        c = self.cfg
        det = track.detection
        width, height = det.box[2] - det.box[0], det.box[3] - det.box[1]
        size = float(min(width, height))
        # a face too small to vote may still show that it is the track's person (verify_min_face_size)
        verify_only = size < c.min_face_size
        if verify_only and (size < c.verify_min_face_size or track.verified or not track.embeddings):
            return None
        sharpness = face_sharpness(image, det.box) if image is not None else None
        if sharpness is not None and sharpness < c.min_sharpness:
            return None
        quality = self.quality(size, sharpness)
        if verify_only:  # every frame until it is verified; no vote, so no embedding counted for the ballot
            track.last_embed_frame = self.frame
            return EmbedRequest(track=track, detection=det, size=size, sharpness=sharpness, quality=quality,
                                verify_only=True)
        track.best_quality = max(track.best_quality, quality)
        area = float(width * height)
        since = self.frame - track.last_embed_frame
        if track.scheduled == 0 or (not track.verified and track.unverified_by != "new"):
            due = True  # a new face, or one that must be verified again before its name shows
        elif track.status == PENDING:
            better = area >= c.reembed_area * track.embedded_area or (
                sharpness is not None and sharpness >= c.reembed_sharpness * track.embedded_sharpness)
            # its first min_votes + 1 votes: a name cannot have settled yet, or one early vote disagreed; only
            # while every embedding voted (a face too turned or blurry to vote waits embed_every frames for a
            # better view instead of using up max_attempts in as many frames)
            first_votes = track.ballot.count <= self.voting.min_votes and track.ballot.count == track.attempts
            due = since >= (c.settle_embed_every if first_votes else c.embed_every) or better
        else:  # settled; an unknown near miss is looked at again sooner
            near_miss = track.status == UNKNOWN and self._near_miss(track)
            due = since >= (c.near_miss_embed_every if near_miss else c.settled_embed_every)
        if not due:
            return None
        track.scheduled += 1
        track.last_embed_frame = self.frame
        track.embedded_area = max(track.embedded_area, area)
        track.embedded_sharpness = max(track.embedded_sharpness, sharpness or 0.0)
        track.embed_quality = quality
        return EmbedRequest(track=track, detection=det, size=size, sharpness=sharpness, quality=quality)

    # ---- recognition feedback ----------------------------------------------------------------------------

    def verify(self, track_id: int, embedding: np.ndarray, name: str | None = None) -> Track | None:
        """Check a new embedding of a track against the faces the track has been (call before
        add_prediction): the same person (nearest of its recent embeddings within `split_distance`, or
        `name` - the classifier's name for this embedding - equal to the track's settled name) verifies the
        track; somebody else splits it: the old track ends with its name and a new confirmed track starts
        on the same box, both reported in this frame's update (`ended`, `started`, `tracks`). Returns the
        track the embedding belongs to (vote for that one), or None if the track has ended."""
        track = self.get(track_id)
        if track is None:
            return None
        embedding = np.asarray(embedding, dtype=np.float32).ravel()
        if track.embeddings:
            nearest = _nearest(track, embedding)
            same_name = name is not None and track.status == NAMED and name == track.name
            if nearest > self.cfg.split_distance and not same_name:
                track = self._split(track, nearest)
        track.embeddings.append(embedding)
        del track.embeddings[:-APPEARANCE_MEMORY]
        _mark_verified(track, "")
        return track

    def reverify(self, track_id: int, embedding: np.ndarray) -> bool:
        """A small face's embedding (an EmbedRequest with verify_only): it verifies the track when it lies
        within `split_distance` of the track's own faces (different people come that close as rarely at 32 px
        as at full size: bench/calibrate_track_split.py --small 32); a farther one proves nothing at this size,
        so it neither splits the track nor is remembered. True when the track is verified now."""
        track = self.get(track_id)
        if track is None or not track.embeddings:
            return False
        if _nearest(track, np.asarray(embedding, dtype=np.float32).ravel()) > self.cfg.split_distance:
            return False
        _mark_verified(track, " by a small face")
        return True

    def _split(self, old: Track, distance: float) -> Track:
        """End `old` (somebody else's face is on its box now) and start a track for the new face."""
        new = Track(box=old.box.copy(), detection=old.detection, first_seen=old.last_seen, last_seen=old.last_seen,
                    ballot=self._ballot(),
                    velocity=old.velocity.copy(), hits=1, look=old.look)
        new.scheduled, new.last_embed_frame = 1, self.frame
        new.embedded_area, new.embedded_sharpness = old.embedded_area, old.embedded_sharpness
        new.embed_quality, new.best_quality = old.embed_quality, old.embed_quality
        self._confirm(new)
        self._tracks[self._tracks.index(old)] = new
        self.splits += 1
        log.debug("track %d (%s %s) split at distance %.3f: track %d", old.id, old.status, old.name, distance,
                  new.id)
        if self._update is not None:
            self._update.ended.append(old)
            self._update.started.append(new)
            self._update.tracks = [new if t is old else t for t in self._update.tracks]
        return new

    def add_prediction(self, track_id: int, name: str | None, confidence: float,
                       quality: float | None = None, vote: bool = True,
                       attempt: bool = True, small: bool = False) -> IdentityChange | None:
        """Vote with one recognition of a track: `name` (None = unknown) and `confidence` as the classifier
        gives them (agent.vision.classifier.Prediction: for an unknown face, the confidence in the nearest
        candidate). `quality` defaults to the quality of the face scheduled last. `vote=False`: the face was
        too poor to recognise (too small, blurry, turned away): it counts as an attempt but not as a vote, so
        a track that never shows a usable face ends up unknown after `max_attempts`. `attempt=False` (with
        vote=False): the face was not all in the picture yet (cut off by the frame's edge): it does not count
        towards `max_attempts`, so a person coming in slowly is not declared unknown before their face is in.
        `small`: the face is under [recognition] small_face_size (its votes need more agreement: voting).
        Returns the change of the track's identity this caused, or None (no change, or the track has ended)."""
        track = self.get(track_id)
        if track is None:
            log.debug("prediction for track %s ignored: no such live track", track_id)
            return None
        if not math.isfinite(confidence):
            raise ValueError(f"add_prediction: confidence must be a finite number, got {confidence}")
        track.attempts += 1
        track.cut_off += not (attempt or vote)
        if vote:
            track.ballot.add(name, confidence, track.embed_quality if quality is None else quality, small)
        ballot = track.ballot
        if ballot.settled:
            status, new_name = (NAMED, ballot.identity) if ballot.identity is not None else (UNKNOWN, None)
        elif track.attempts - track.cut_off >= self.cfg.max_attempts:
            status, new_name = UNKNOWN, None
        else:
            status, new_name = track.status, track.name
        if (status, new_name) == (track.status, track.name):
            return None
        previous, previous_status = track.name, track.status
        track.status, track.name = status, new_name
        kind = "unknown" if status == UNKNOWN else "changed" if previous_status == NAMED else "identified"
        log.debug("track %d %s: %s -> %s", track.id, kind, previous, new_name)
        return IdentityChange(track=track, kind=kind, name=new_name, previous=previous,
                              previous_status=previous_status, confidence=track.confidence, votes=track.votes)

    def finish(self) -> list[Track]:
        """End every track (end of stream, shutdown): the confirmed ones are returned for their events."""
        ended = self._cut_ended + self.tracks
        self._tracks, self._cut_ended = [], []
        return ended
