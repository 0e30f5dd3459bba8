"""Tracker, embed schedule and voting on constructed detection sequences (plus real faces for sharpness)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from conftest import FR

from agent.config import TrackerSection, VotingSection
from agent.images import load_image
from agent.vision.mtcnn import Detection
from agent.vision.tracker import (
    NAMED,
    PENDING,
    UNKNOWN,
    Tracker,
    face_sharpness,
    greedy_match,
    iou_matrix,
)
from agent.vision.voting import Ballot, vote_weight


def det(x: float, y: float, size: float = 60, score: float = 0.99) -> Detection:
    """A face box with top-left (x, y), landmarks placed like a frontal face."""
    lm = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]) * size + [x, y]
    return Detection(x, y, x + size, y + size, score, lm)


def make_tracker(**changes) -> Tracker:
    """A tracker with the default settings, but confirming a track on its 2nd detection unless `min_hits` is
    given: most tests below follow a tentative track through its confirmation."""
    changes.setdefault("min_hits", 2)
    voting = {k: changes.pop(k) for k in ("window", "min_votes", "hysteresis", "single_vote_certainty")
              if k in changes}
    return Tracker(dataclasses.replace(TrackerSection(), **changes), dataclasses.replace(VotingSection(), **voting))


def run(tracker: Tracker, frames: list[list[Detection]]) -> list:
    return [tracker.update(dets, None, float(i)) for i, dets in enumerate(frames)]


# ---------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------

def test_iou_matrix_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], dtype=float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[1].max() == 0.0
    assert greedy_match(iou, 0.3) == [(0, 0)]
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert greedy_match(np.zeros((0, 3)), 0.3) == []
    # highest IoU first: row 1 takes column 0 even though row 0 comes first
    assert greedy_match(np.array([[0.5, 0.4], [0.9, 0.0]]), 0.3) == [(1, 0), (0, 1)]


# ---------------------------------------------------------------------------------------------------------
# association
# ---------------------------------------------------------------------------------------------------------

def test_moving_face_is_one_track_confirmed_after_min_hits():
    tracker = make_tracker(min_hits=2)
    updates = run(tracker, [[det(100 + 8 * i, 100 + 2 * i)] for i in range(40)])
    assert updates[0].started == [] and updates[0].tracks == []
    assert [t.id for t in updates[1].started] == [1]
    assert all(len(u.tracks) == 1 and u.tracks[0].id == 1 for u in updates[1:])
    assert sum(len(u.started) for u in updates) == 1
    track = updates[-1].tracks[0]
    assert track.hits == 40 and track.missed == 0 and track.age == 40
    assert track.first_seen == 0.0 and track.last_seen == 39.0
    # the filtered box follows the face and the velocity estimate converges to the motion
    assert np.allclose(track.box, det(100 + 8 * 39, 100 + 2 * 39).box, atol=2.0)
    assert np.allclose(track.velocity, [8, 2, 8, 2], atol=0.5)
    assert track.detection.box == det(100 + 8 * 39, 100 + 2 * 39).box


def test_fast_face_is_followed_by_the_motion_prediction():
    # accelerates to 40 px/frame: consecutive 60 px boxes then overlap by IoU 0.2 < iou_threshold 0.3
    xs = [100.0]
    for i in range(1, 25):
        xs.append(xs[-1] + min(40, 5 * i))
    raw_iou = iou_matrix(np.array([det(xs[-2], 200).box]), np.array([det(xs[-1], 200).box]))[0, 0]
    assert raw_iou < 0.3
    updates = run(make_tracker(), [[det(x, 200)] for x in xs])
    assert sum(len(u.started) for u in updates) == 1
    assert [t.id for t in updates[-1].tracks] == [1]


def test_crossing_faces_keep_their_identities():
    # A moves right, B moves left, 30 px lower: they overlap heavily while crossing
    frames = [[det(100 + 10 * i, 100), det(400 - 10 * i, 130)] for i in range(31)]
    updates = run(make_tracker(), frames)
    assert sum(len(u.started) for u in updates) == 2
    tracks = {t.id: t for t in updates[-1].tracks}
    assert set(tracks) == {1, 2}
    a = next(t for t in tracks.values() if t.box[1] < 115)
    b = next(t for t in tracks.values() if t.box[1] > 115)
    # A (started on the left) ended on the right, B the other way round
    assert a.box[0] > 350 and b.box[0] < 150
    assert a.velocity[0] > 5 and b.velocity[0] < -5
    assert a.hits == b.hits == 31


def test_short_occlusion_keeps_the_track_long_one_ends_it_once():
    tracker = make_tracker(max_missed=5)
    frames = [[det(200, 200)]] * 10 + [[]] * 5 + [[det(203, 201)]] * 10  # gap of 5 = max_missed
    updates, missed = [], []
    for i, dets in enumerate(frames):
        updates.append(tracker.update(dets, None, float(i)))
        missed.append([t.missed for t in updates[-1].tracks])  # coasting tracks are still reported
    assert missed[9:16] == [[0], [1], [2], [3], [4], [5], [0]]
    assert sum(len(u.started) for u in updates) == 1
    assert sum(len(u.ended) for u in updates) == 0
    track = updates[-1].tracks[0]
    assert track.id == 1 and track.hits == 20

    frames = [[]] * 6 + [[det(200, 200)]] * 3  # now a gap of 6 > max_missed
    updates = run(tracker, frames)
    ended = [t for u in updates for t in u.ended]
    assert [t.id for t in ended] == [1]
    assert updates[5].ended == ended and updates[5].tracks == []
    assert [t.id for u in updates for t in u.started] == [2]
    assert ended[0].duration == pytest.approx(24.0)  # timestamps 0..24 in the first run


def test_moving_face_survives_a_short_gap():
    frames = [[det(100 + 6 * i, 150)] if not 20 <= i < 24 else [] for i in range(40)]
    updates = run(make_tracker(), frames)
    assert [t.id for u in updates for t in u.started] == [1]
    assert updates[-1].tracks[0].hits == 36


def test_min_hits_false_positives_and_flicker():
    tracker = make_tracker(min_hits=3)
    # a one-frame false detection and a face seen every other frame never become tracks
    frames = [[det(50, 50), det(300, 300)], [], [det(300, 300)], [], [det(300, 300)], []]
    assert all(not u.started and not u.tracks for u in run(tracker, frames))
    updates = run(tracker, [[det(300, 300)]] * 4)
    assert [len(u.started) for u in updates] == [0, 0, 1, 0]
    assert updates[2].started[0].id == 1  # ids count confirmed tracks only
    one = make_tracker(min_hits=1)
    assert [t.id for t in one.update([det(10, 10), det(200, 10)], None, 0.0).started] == [1, 2]


def test_finish_ends_every_confirmed_track():
    tracker = make_tracker()
    run(tracker, [[det(10, 10), det(200, 200)]] * 3 + [[det(10, 10), det(200, 200), det(400, 400)]])
    ended = tracker.finish()
    assert sorted(t.id for t in ended) == [1, 2]  # the tentative third face is not a track
    assert tracker.tracks == [] and tracker.finish() == []


# ---------------------------------------------------------------------------------------------------------
# embed schedule
# ---------------------------------------------------------------------------------------------------------

def embed_frames(updates) -> list[int]:
    return [u.frame for u in updates if u.to_embed]


def test_embed_schedule_new_then_unsettled_then_settled():
    """A new track is embedded on consecutive frames for its first min_votes + 1 votes (its name can settle on
    its 2nd embedding, not 5 frames later, and one early vote that disagrees is outvoted at once); votes that
    keep disagreeing leave it unsettled: every embed_every frames."""
    tracker = make_tracker(min_hits=2, settle_embed_every=1, embed_every=5, settled_embed_every=20,
                           max_attempts=100, min_votes=2)
    embedded = []
    names = iter(["ann", "bob", "carol", "dave", "eve"])  # all different: nothing settles
    for i in range(14):
        update = tracker.update([det(100, 100)], None, float(i))
        if update.to_embed:
            embedded.append(update.frame)
            tracker.add_prediction(1, next(names), 0.6)
    assert embedded == [2, 3, 4, 9, 14] and tracker.get(1).status == PENDING
    # no votes fed back at all (too turned or blurry to vote): every embed_every frames until max_attempts,
    # waiting for a better view instead of using the attempts up in as many frames
    tracker = make_tracker(min_hits=2, settle_embed_every=1, embed_every=5, max_attempts=3)
    embedded = []
    for i in range(16):
        update = tracker.update([det(100, 100)], None, float(i))
        if update.to_embed:
            embedded.append(update.frame)
            tracker.add_prediction(1, None, 0.0, vote=False)
    assert embedded == [2, 7, 12] and tracker.get(1).status == UNKNOWN


def test_embed_schedule_unsettled_then_settled():
    tracker = make_tracker(min_hits=2, settle_embed_every=5, embed_every=5, settled_embed_every=20,
                           max_attempts=100)
    updates = run(tracker, [[det(100, 100)]] * 16)
    # confirmed on frame 2 -> embedded at once, then every 5 frames
    assert embed_frames(updates) == [2, 7, 12]
    request = updates[1].to_embed[0]
    assert request.track.id == 1 and request.detection.box == det(100, 100).box
    assert request.size == 60 and request.sharpness is None and 0 < request.quality <= 1
    # identity settles (min_votes=2): from then on every 20 frames
    assert tracker.add_prediction(1, "ann", 0.9) is None
    change = tracker.add_prediction(1, "ann", 0.9)
    assert change.kind == "identified" and change.name == "ann"
    updates = run(tracker, [[det(100, 100)]] * 30)
    assert embed_frames(updates) == [32]  # frames 17..46; the last embedding was on frame 12


def test_embed_early_when_the_face_gets_clearly_larger():
    tracker = make_tracker(settle_embed_every=10, embed_every=10, max_attempts=100)
    sizes = [60, 60, 60, 62, 64, 70, 75]  # 75^2 / 60^2 = 1.56 >= 1.3; 70^2/60^2 = 1.36 too
    updates = run(tracker, [[det(100, 100, s)] for s in sizes])
    assert embed_frames(updates) == [2, 6]
    updates = run(tracker, [[det(100, 100, 75)]] * 10)  # the same size: back to the regular 10 frames
    assert embed_frames(updates) == [16]


def test_small_and_blurry_faces_are_not_embedded():
    tracker = make_tracker(min_face_size=40, settle_embed_every=5)
    updates = run(tracker, [[det(100, 100, size=30)]] * 5 + [[det(100, 100, size=45)]] * 2)
    assert updates[1].started and not any(u.to_embed for u in updates[:5])
    assert embed_frames(updates) == [6]  # the first frame it is large enough


def test_sharpness_of_a_real_face_and_its_blurred_copy():
    image = load_image(FR / "tests" / "test_images" / "obama.jpg")
    box = (349, 142, 617, 409)  # x1, y1, x2, y2 of the face (README)
    sharp = face_sharpness(image, box)
    blurred = cv2.GaussianBlur(image, (0, 0), 12)  # a 3 px blur at the 64 px measuring size
    soft = face_sharpness(blurred, box)
    assert sharp > 100 > 20 > soft
    assert face_sharpness(cv2.GaussianBlur(image, (0, 0), 4), box) < sharp  # monotonic in the blur
    assert face_sharpness(image, (-50, -50, 1, 1)) == 0.0  # nothing left after clipping
    assert face_sharpness(image, (1100, 800, 1300, 1000)) >= 0.0  # partly outside: clipped

    face = Detection(*box, 0.99, np.zeros((5, 2)))
    tracker = make_tracker(min_hits=1, min_sharpness=20.0)
    assert tracker.update([face], blurred, 0.0).to_embed == []
    request = tracker.update([face], image, 1.0).to_embed[0]
    assert request.sharpness == pytest.approx(sharp) and request.quality == pytest.approx(1.0)
    assert tracker.tracks[0].best_quality == pytest.approx(1.0)


def test_quality_grows_with_size_and_sharpness():
    tracker = make_tracker(full_quality_size=100, full_quality_sharpness=100.0)
    assert tracker.quality(50, None) == pytest.approx(0.5)
    assert tracker.quality(50, 50.0) == pytest.approx(0.25)
    assert tracker.quality(300, 1000.0) == 1.0


# ---------------------------------------------------------------------------------------------------------
# voting
# ---------------------------------------------------------------------------------------------------------

def test_vote_weights():
    assert vote_weight("ann", 0.9, 1.0) > vote_weight("ann", 0.5, 1.0) > vote_weight("ann", 0.5, 0.0)
    assert vote_weight(None, 0.1, 1.0) == pytest.approx(0.9)  # unknown: 1 - confidence in the candidate
    assert vote_weight("ann", 0.0, 0.0) > 0  # every vote counts a little
    assert vote_weight("ann", 7.0, 3.0) == pytest.approx(1.0)  # clamped


def test_ballot_settles_after_min_votes():
    ballot = Ballot(window=10, min_votes=3, hysteresis=1.5)
    assert ballot.add("ann", 0.9, 1) is False
    assert ballot.add("ann", 0.9, 1) is False and not ballot.settled
    assert ballot.add("ann", 0.9, 1) is True
    assert ballot.settled and ballot.identity == "ann"
    assert ballot.add("ann", 0.9, 1) is False  # no change, no news


def test_ballot_a_first_vote_well_inside_the_gate_settles_alone():
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5, single_vote_certainty=0.9)
    assert ballot.add("ann", 0.95, 1) is True and ballot.identity == "ann"  # named on its first frame
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5, single_vote_certainty=0.9)
    assert ballot.add("ann", 0.9, 1) is False  # not more certain than 0.9: waits for a 2nd vote
    assert ballot.add("ann", 0.6, 1) is True
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5, single_vote_certainty=0.9)
    assert ballot.add(None, 0.01, 1) is False  # "unknown" always needs min_votes
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5, single_vote_certainty=0.9)
    assert ballot.add("bob", 0.5, 1) is False
    assert ballot.add("ann", 0.99, 1) is False  # the votes disagree: no single vote decides
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5, single_vote_certainty=1.0)
    assert ballot.add("ann", 0.999, 1) is False  # 1 = never


def test_ballot_one_bad_frame_does_not_flip_but_a_sustained_change_does():
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5)
    for _ in range(5):
        ballot.add("ann", 0.8, 1)
    assert ballot.identity == "ann"
    assert ballot.add("bob", 0.99, 1) is False  # one very confident bad frame
    assert ballot.add("ann", 0.8, 1) is False
    assert ballot.add("bob", 0.99, 1) is False  # two bob votes, 1.98 < 1.5 x ann's 4.8
    assert ballot.identity == "ann"
    flips = [ballot.add("bob", 0.9, 1) for _ in range(6)]
    assert flips.count(True) == 1 and ballot.identity == "bob"
    assert ballot.totals["ann"].count == 6 and ballot.totals["bob"].count == 8


def test_ballot_unknown_is_an_outcome():
    ballot = Ballot(window=5, min_votes=2, hysteresis=1.5)
    assert ballot.add(None, 0.1, 1) is False
    assert ballot.add("", 0.2, 1) is True  # "" is unknown too
    assert ballot.settled and ballot.identity is None
    assert ballot.totals[None].best_certainty == pytest.approx(0.9)


def test_ballot_weight_decides_not_the_count():
    ballot = Ballot(window=10, min_votes=2, hysteresis=1.5)
    ballot.add("bob", 0.95, 1.0)
    ballot.add("ann", 0.3, 0.2)
    assert ballot.add("ann", 0.3, 0.2) is False  # two weak ann votes do not beat one strong bob vote
    assert ballot.add("bob", 0.9, 1.0) is True and ballot.identity == "bob"


def test_bad_voting_settings_are_clear_errors():
    from agent.config import ConfigError, config_from_dict

    for section, key, value in (("voting", "hysteresis", 0.5), ("voting", "min_votes", 11),
                                ("tracker", "iou_threshold", 0.0), ("tracker", "min_hits", 0),
                                ("tracker", "split_distance", 0.0), ("tracker", "look_threshold", 1.5),
                                ("tracker", "show_coasting", 16)):
        with pytest.raises(ConfigError, match=f"{section}.{key}"):  # checked once, in the config schema
            config_from_dict({section: {key: value}}, env={})


# ---------------------------------------------------------------------------------------------------------
# identity changes through the tracker: exactly once per change
# ---------------------------------------------------------------------------------------------------------

def confirmed_tracker(**changes) -> Tracker:
    tracker = make_tracker(**changes)
    run(tracker, [[det(100, 100)]] * 2)
    assert [t.id for t in tracker.tracks] == [1]
    return tracker


def test_identity_changes_come_out_once():
    tracker = confirmed_tracker(min_votes=2, window=10, hysteresis=1.5)
    changes = [tracker.add_prediction(1, "ann", 0.9) for _ in range(6)]
    assert [c.kind for c in changes if c] == ["identified"]
    first = next(c for c in changes if c)
    assert first.name == "ann" and first.previous is None and first.previous_status == PENDING
    assert first.votes == 2 and first.confidence == pytest.approx(0.9)
    track = tracker.get(1)
    assert track.status == NAMED and track.name == "ann"

    assert tracker.add_prediction(1, "bob", 0.95) is None  # one bad frame
    changes = [tracker.add_prediction(1, "bob", 0.9) for _ in range(8)]
    real = [c for c in changes if c]
    assert [(c.kind, c.name, c.previous) for c in real] == [("changed", "bob", "ann")]
    assert track.name == "bob" and track.summary()["name"] == "bob"

    changes = [tracker.add_prediction(1, None, 0.05) for _ in range(10)]
    assert [(c.kind, c.name, c.previous) for c in changes if c] == [("unknown", None, "bob")]
    assert track.status == UNKNOWN and track.confidence == pytest.approx(0.95)


def test_unsettled_track_becomes_unknown_after_max_attempts_then_rarely_rechecked():
    tracker = confirmed_tracker(max_attempts=4, min_votes=3, window=10, embed_every=2, settled_embed_every=10)
    names = ["ann", "bob", "cy", "dee"]  # never agreeing
    changes = [tracker.add_prediction(1, n, 0.7) for n in names]
    assert [c.kind if c else None for c in changes] == [None, None, None, "unknown"]
    assert changes[-1].votes == 0  # nobody voted unknown: it is the attempts that ran out
    assert tracker.add_prediction(1, "eve", 0.7) is None  # still unknown: no second event
    assert tracker.add_prediction(1, None, 0.05) is None  # far from everybody: a stranger
    # re-checked every settled_embed_every frames only
    updates = run(tracker, [[det(100, 100)]] * 25)
    assert embed_frames(updates) == [12, 22]
    # and a name the votes agree on later still comes out
    kinds = [c.kind for c in (tracker.add_prediction(1, "ann", 0.9) for _ in range(3)) if c]
    assert kinds == ["identified"]


def test_an_unknown_near_miss_is_looked_at_again_sooner():
    """An unknown track whose latest face came within near_miss_confidence of a name (a turned or blurred
    first frame of the person) is embedded every near_miss_embed_every frames, a stranger far from everybody
    every settled_embed_every; a name then takes over from "unknown" by weight alone (unknown_hysteresis 1)."""
    tracker = confirmed_tracker(min_votes=2, embed_every=5, near_miss_embed_every=3, settled_embed_every=10,
                                near_miss_confidence=0.25)
    assert tracker.add_prediction(1, None, 0.3) is None
    assert tracker.add_prediction(1, None, 0.4).kind == "unknown"  # two near misses: unknown for now
    assert embed_frames(run(tracker, [[det(100, 100)]] * 8)) == [5, 8]  # every near_miss_embed_every (3) frames
    assert tracker.add_prediction(1, "ann", 0.75) is None  # 0.75 < unknown's 0.7 + 0.6
    change = tracker.add_prediction(1, "ann", 0.75)  # 1.5 > 1.3: no hysteresis against unknown
    assert change.kind == "identified" and change.name == "ann"
    stranger = confirmed_tracker(min_votes=2, embed_every=5, near_miss_embed_every=3, settled_embed_every=10,
                                 near_miss_confidence=0.25)
    stranger.add_prediction(1, None, 0.05)
    assert stranger.add_prediction(1, None, 0.1).kind == "unknown"
    assert embed_frames(run(stranger, [[det(100, 100)]] * 12)) == [12]  # settled_embed_every


def test_ballot_unknown_gives_way_by_its_own_hysteresis():
    strict = Ballot(window=10, min_votes=2, hysteresis=1.5, unknown_hysteresis=1.5)
    loose = Ballot(window=10, min_votes=2, hysteresis=1.5, unknown_hysteresis=1.0)
    for ballot in (strict, loose):
        ballot.add(None, 0.3, 1)
        assert ballot.add(None, 0.4, 1) and ballot.identity is None
        ballot.add("ann", 0.75, 1)
        ballot.add("ann", 0.75, 1)
    assert strict.identity is None and loose.identity == "ann"
    # a settled name still needs hysteresis times its weight to change
    assert not loose.add("bob", 0.9, 1) and not loose.add("bob", 0.9, 1) and loose.identity == "ann"


def test_a_face_cut_off_by_the_frame_edge_waits_without_using_up_the_attempts():
    """A person coming in at the side: their cut-off faces (attempt=False) neither vote nor count towards
    max_attempts, so the track stays pending however long it takes, then the first whole faces name it. Faces
    too poor to vote for other reasons (turned, blurry) still count."""
    tracker = confirmed_tracker(max_attempts=3, min_votes=2)
    assert all(tracker.add_prediction(1, None, 0.0, vote=False, attempt=False) is None for _ in range(10))
    track = tracker.get(1)
    assert track.status == "pending" and track.attempts == 10 and track.cut_off == 10 and track.votes == 0
    kinds = [c.kind for c in (tracker.add_prediction(1, "ann", 0.8) for _ in range(2)) if c]
    assert kinds == ["identified"] and tracker.get(1).name == "ann"
    tracker = confirmed_tracker(max_attempts=3, min_votes=2)
    tracker.add_prediction(1, None, 0.0, vote=False, attempt=False)
    changes = [tracker.add_prediction(1, None, 0.0, vote=False) for _ in range(3)]  # turned away: they count
    assert [c.kind if c else None for c in changes] == [None, None, "unknown"]


def test_prediction_for_an_ended_track_is_ignored():
    tracker = confirmed_tracker(max_missed=1)
    run(tracker, [[], []])
    assert tracker.get(1) is None
    assert tracker.add_prediction(1, "ann", 0.9) is None
    assert tracker.add_prediction(99, "ann", 0.9) is None


def test_ended_track_carries_its_final_identity():
    tracker = confirmed_tracker(max_missed=2)
    for _ in range(3):
        tracker.add_prediction(1, "ann", 0.8, quality=0.5)
    tracker.add_prediction(1, "ann", 0.93)
    ended = [t for u in run(tracker, [[]] * 3) for t in u.ended]
    assert len(ended) == 1
    summary = ended[0].summary()
    assert summary["track_id"] == 1 and summary["name"] == "ann" and summary["status"] == NAMED
    assert summary["votes"] == 4 and summary["predictions"] == 4
    assert summary["confidence"] == pytest.approx(0.93)
    assert summary["duration"] == pytest.approx(1.0)  # seen at t=0 and t=1


# ---------------------------------------------------------------------------------------------------------
# real detections
# ---------------------------------------------------------------------------------------------------------

def test_real_detections_on_the_hamilton_close_up(shared):
    """Frames 21-64 of the Hamilton clip: one close-up face moving ~20 px a frame (frames 21-47, missed by
    MTCNN on frames 43 and 44, blurred, where the reference's pyramid finds it at 0.84 and 0.81 but misses
    frame 42 and adds a false detection on frame 30 (its levels resized from the frame, ours from its
    halvings)), then no face."""
    from agent.config import SourceSection, config_from_dict
    from agent.sources import open_source
    from agent.vision.recognizer import build_detector

    # only large faces (fast); the reference thresholds and every face down to them: this tests the tracker
    detector = build_detector(config_from_dict({"detector": {"min_face_size": 80, "thresholds": [0.6, 0.7, 0.7],
                                                             "min_score": 0.0}}))
    tracker = make_tracker()  # the defaults: min_hits 2, max_missed 15
    clip = FR / "examples" / "short_hamilton_clip.mp4"
    started, ended, embedded = [], [], []
    with open_source(dataclasses.replace(SourceSection(), uri=str(clip))) as src:
        while (frame := src.read(20)) is not None and frame.index <= 64:
            if frame.index < 21:
                continue
            update = tracker.update(detector.detect(frame.image), frame.image, frame.timestamp)
            started += [(frame.index, t.id) for t in update.started]
            ended += [(frame.index, t.id, t.hits) for t in update.ended]
            embedded += [frame.index for r in update.to_embed]
    assert started == [(22, 1)]
    assert ended == [(63, 1, 25)]  # 27 frames minus the missed two; ended 15 frames after the last
    # no prediction fed back: pending, so embedded at once, then at least every embed_every (5) frames -
    # sooner when the face gets clearly sharper or larger
    assert embedded[0] == 22 and set(embedded) <= set(range(22, 48)) - {43, 44}
    assert all(1 <= b - a <= 5 for a, b in zip(embedded, embedded[1:])) and embedded[-1] >= 43


# ---------------------------------------------------------------------------------------------------------
# one track, one person: appearance, cuts and the cheap checks
# ---------------------------------------------------------------------------------------------------------

def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128)
    return v / np.linalg.norm(v)


def near(base: np.ndarray, distance: float, seed: int = 99) -> np.ndarray:
    """A unit vector at exactly `distance` (L2) from the unit vector `base`."""
    other = unit(seed)
    other -= (other @ base) * base
    other /= np.linalg.norm(other)
    angle = 2 * np.arcsin(distance / 2)
    return np.cos(angle) * base + np.sin(angle) * other


def named_tracker(name: str = "ann", emb: np.ndarray | None = None, **changes) -> tuple[Tracker, np.ndarray]:
    """A confirmed track 1 at (100, 100), settled on `name` through verified embeddings."""
    tracker = make_tracker(**changes)
    emb = unit(1) if emb is None else emb
    run(tracker, [[det(100, 100)]] * 2)
    for _ in range(2):
        track = tracker.verify(1, emb, name)
        tracker.add_prediction(track.id, name, 0.9)
    assert tracker.get(1).shown_name == name
    return tracker, emb


def test_a_far_embedding_splits_the_track_and_the_name_is_not_carried():
    tracker, emb = named_tracker(split_distance=0.5)
    update = tracker.update([det(100, 100)], None, 10.0)
    assert tracker.verify(1, near(emb, 0.45), "ann").id == 1  # the same person: verified, no split
    new = tracker.verify(1, near(emb, 0.7, seed=7), "bob")  # somebody else
    assert new.id == 2 and new.status == PENDING and new.name is None and new.verified
    assert [t.id for t in update.ended] == [1] and update.ended[0].name == "ann"  # ends with its name
    assert [t.id for t in update.started] == [2] and [t.id for t in update.tracks] == [2]
    assert tracker.get(1) is None and tracker.splits == 1
    assert new.ballot.count == 0 and np.allclose(new.box, update.ended[0].box)
    change = tracker.add_prediction(2, "bob", 0.9)
    assert change is None and tracker.add_prediction(2, "bob", 0.9).name == "bob"  # a fresh vote


def test_a_big_change_of_pose_named_as_the_same_person_does_not_split():
    tracker, emb = named_tracker(split_distance=0.5)
    tracker.update([det(100, 100)], None, 10.0)
    assert tracker.verify(1, near(emb, 0.55), "ann").id == 1  # far, but the classifier says ann: verified
    assert tracker.verify(1, near(emb, 0.7, seed=5), None).id == 2  # far and not ann: split


def test_coasting_hides_the_name_until_an_embedding_verifies_the_face():
    tracker, emb = named_tracker(max_missed=5)
    update = tracker.update([], None, 3.0)  # the detector missed the face
    track = update.tracks[0]
    assert track.coasting and track.shown_status == PENDING and track.shown_name is None
    assert track.status == NAMED and track.name == "ann"  # the vote is kept, only not shown
    update = tracker.update([det(101, 100)], None, 4.0)
    assert [r.track.id for r in update.to_embed] == [1]  # embedded at once to verify
    assert tracker.verify(1, near(emb, 0.2), None).shown_name == "ann"


def test_a_face_that_jumps_or_changes_its_look_is_unverified():
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    face_a = load_image(FR / "examples" / "knn_examples" / "train" / "biden" / "biden.jpg")
    face_b = load_image(FR / "tests" / "test_images" / "obama.jpg")
    tracker, emb = named_tracker(jump_ratio=0.4)
    for face, expect in ((face_a, "ann"), (face_a, "ann"), (face_b, None)):
        image[100:160, 100:160] = cv2.resize(face, (60, 60))
        tracker.update([det(100, 100)], image, 5.0)
        assert tracker.get(1).shown_name == expect
    assert tracker.get(1).unverified_by == "look"
    tracker.verify(1, near(emb, 0.3), None)
    tracker.update([det(100, 100)], image, 6.0)
    assert tracker.get(1).shown_name == "ann"
    tracker.update([det(127, 100)], image, 7.0)  # 27 px > 0.4 face sizes away from where it was going
    assert tracker.get(1).shown_name is None and tracker.get(1).unverified_by == "jump"
    tracker, _ = named_tracker()
    tracker.update([det(80, 80, size=100)], None, 8.0)  # 60 -> 100 px around the same centre
    assert tracker.get(1).shown_name is None and tracker.get(1).unverified_by == "resize"


def test_a_shot_cut_ends_every_track():
    tracker, _ = named_tracker()
    dark = np.full((360, 640, 3), 40, dtype=np.uint8)
    assert tracker.check_scene(dark) is False  # the first frame
    assert tracker.check_scene(dark + 3) is False  # the light changes a little
    update = tracker.update([det(100, 100)], dark, 5.0)
    assert [t.id for t in update.tracks] == [1]
    assert tracker.check_scene(np.full((360, 640, 3), 160, dtype=np.uint8)) is True  # another shot
    update = tracker.update([det(100, 100)], None, 6.0)
    assert [t.id for t in update.ended] == [1] and update.ended[0].name == "ann"
    assert update.tracks == [] and tracker.cuts == 1  # the face on the new shot starts a new track
    update = tracker.update([det(100, 100)], None, 7.0)
    assert [t.id for t in update.started] == [2]


def test_a_small_face_only_verifies_its_track_never_votes_or_splits():
    """Below min_face_size (but at least verify_min_face_size) an unverified track's face is embedded to show
    it is still the track's person: near its faces it verifies, far it proves nothing (no split), and it is
    never a vote."""
    tracker = make_tracker(min_hits=1, min_face_size=40, verify_min_face_size=32)
    (request,) = tracker.update([det(50, 50, 50)], None, 0.0).to_embed
    assert not request.verify_only
    me = np.zeros(128, np.float32)
    track = tracker.verify(request.track.id, me)
    tracker.add_prediction(track.id, "ada", 0.95)
    track.verified, track.unverified_by = False, "look"  # e.g. the look check fired
    (request,) = tracker.update([det(52, 52, 36)], None, 1.0).to_embed  # 36 px
    assert request.verify_only and request.track is track
    assert not tracker.reverify(track.id, me + 0.6 / np.sqrt(128)) and not track.verified  # far: proves nothing
    assert tracker.get(track.id) is track and tracker.splits == 0 and len(track.embeddings) == 1
    (request,) = tracker.update([det(52, 52, 36)], None, 2.0).to_embed  # still unverified: asked again
    assert request.verify_only
    assert tracker.reverify(track.id, me + 0.3 / np.sqrt(128)) and track.verified
    assert len(track.embeddings) == 1 and track.votes == 1
    assert tracker.update([det(52, 52, 36)], None, 3.0).to_embed == []  # verified: nothing to do at this size
    track.verified, track.unverified_by = False, "look"
    assert tracker.update([det(52, 52, 28)], None, 4.0).to_embed == []  # 28 px: below verify_min_face_size
