"""Who is this track? A weighted vote over its recent predictions, with hysteresis.

Each prediction of a track is a vote for a name, or for "unknown" (None). A vote weighs the certainty of
its outcome (the classifier's confidence for a name; one minus the confidence in the nearest candidate for
"unknown") scaled by the face quality (0..1: size and sharpness of the face). The identity is settled on
the label with the most weight in the last `window` votes once it has `min_votes` votes there, or sooner
when every vote so far is for one name and one of them is more certain than `single_vote_certainty` (a face
well inside the recognition gate is named on its first frame, as a per-frame loop would). A settled
identity changes only when a challenger has `min_votes` votes AND more than `hysteresis` times the
settled label's weight, so one bad frame never flips a name (a settled "unknown" gives way to a name at
`unknown_hysteresis` times its weight: the gate holds strangers to 1% a face already, and a track whose
first faces were poor (blurred, turned, just outside the gate) must not stay unknown while the person faces
the camera). "Unknown" is an outcome like any name.

Small faces (under `[recognition] small_face_size`: farther away, noisier embeddings) are weaker evidence:
their votes count as usual, but a label whose votes in the window all come from small faces needs
`small_face_votes` of them (instead of `min_votes`) to settle or take over, and a small face's single vote never
settles a name alone.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

MIN_WEIGHT = 0.05  # a vote always counts a little, even at confidence 0
QUALITY_FLOOR = 0.5  # a vote of the worst acceptable face still weighs half a perfect one


@dataclass(frozen=True)
class Vote:
    name: str | None  # None = unknown
    confidence: float  # the classifier's confidence in its nearest candidate (0..1)
    quality: float  # face quality 0..1
    weight: float
    small: bool = False  # a face under [recognition] small_face_size


@dataclass
class LabelTotal:
    """Every vote a label got over the track's life (not just the window)."""

    count: int = 0
    best_certainty: float = 0.0  # max over its votes of confidence (a name) or 1 - confidence (unknown)
    best_large_certainty: float = 0.0  # the same over the votes of faces not small (the single-vote shortcut)


def certainty(name: str | None, confidence: float) -> float:
    """How sure a prediction is of its own outcome: confidence for a name, 1 - confidence for unknown."""
    confidence = min(1.0, max(0.0, float(confidence)))
    return confidence if name is not None else 1.0 - confidence


def vote_weight(name: str | None, confidence: float, quality: float) -> float:
    """Weight of one vote: its certainty, scaled from QUALITY_FLOOR (quality 0) to 1 (quality 1)."""
    quality = min(1.0, max(0.0, float(quality)))
    return max(MIN_WEIGHT, certainty(name, confidence)) * (QUALITY_FLOOR + (1.0 - QUALITY_FLOOR) * quality)


@dataclass
class Ballot:
    """The votes of one track. `add()` a prediction; `settled`/`identity` say the current outcome."""

    window: int = 10
    min_votes: int = 2
    hysteresis: float = 1.5
    unknown_hysteresis: float = 1.5  # the same against a settled "unknown" (None)
    single_vote_certainty: float = 1.0  # a first name this certain settles alone (1 = never)
    small_face_votes: int = 0  # votes a label of small faces only needs (0: min_votes)
    votes: collections.deque = field(init=False)
    settled: bool = field(default=False, init=False)
    identity: str | None = field(default=None, init=False)  # the settled label (None = unknown)
    totals: dict = field(default_factory=dict, init=False)  # label -> LabelTotal
    count: int = field(default=0, init=False)  # votes over the track's life

    def __post_init__(self) -> None:
        self.votes = collections.deque(maxlen=self.window)

    def add(self, name: str | None, confidence: float, quality: float, small: bool = False) -> bool:
        """Count one prediction (`small`: of a face under small_face_size); True when the settled identity
        changed (including the first settling)."""
        name = name or None  # "" counts as unknown too
        vote = Vote(name, float(confidence), float(quality), vote_weight(name, confidence, quality), small)
        self.votes.append(vote)
        self.count += 1
        total = self.totals.setdefault(name, LabelTotal())
        total.count += 1
        total.best_certainty = max(total.best_certainty, certainty(name, confidence))
        if not small:
            total.best_large_certainty = max(total.best_large_certainty, certainty(name, confidence))
        return self._decide()

    def tally(self) -> dict[str | None, tuple[int, float]]:
        """label -> (votes, summed weight) over the window."""
        out: dict[str | None, tuple[int, float]] = {}
        for v in self.votes:
            n, w = out.get(v.name, (0, 0.0))
            out[v.name] = (n + 1, w + v.weight)
        return out

    def votes_needed(self, label: str | None) -> int:
        """min_votes, or small_face_votes when every vote for `label` in the window is of a small face."""
        if any(v.name == label and not v.small for v in self.votes):
            return self.min_votes
        return max(self.min_votes, self.small_face_votes)

    def _decide(self) -> bool:
        tally = self.tally()
        ranked = sorted(tally.items(), key=lambda kv: (kv[1][1], kv[1][0]), reverse=True)
        top, (top_votes, top_weight) = ranked[0]
        if not self.settled:
            sure = (top is not None and len(tally) == 1
                    and self.totals[top].best_large_certainty > self.single_vote_certainty)
            if top_votes < self.votes_needed(top) and not sure:
                return False
            self.settled, self.identity = True, top
            return True
        if top == self.identity or top_votes < self.votes_needed(top):
            return False
        held = tally.get(self.identity, (0, 0.0))[1]
        if top_weight > (self.hysteresis if self.identity is not None else self.unknown_hysteresis) * held:
            self.identity = top
            return True
        return False

