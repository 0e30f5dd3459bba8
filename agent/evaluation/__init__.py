"""How well does recognition work on *your* people? `face-agent eval` and `face-agent tune` (docs/evaluation.md).

Terms used throughout. Distances are the *effective distances* of the open-set rule
(`agent.vision.classifier.effective_distance`), exactly what `[recognition] distance_threshold` gates at
runtime: tune, eval and the agent share one decision rule and one meaning of the threshold.
- genuine distance: a query photo's effective distance to its own person (nearest-other person as the
  second one);
- impostor distance: its effective distance to the nearest other person, as if its own person were not
  enrolled. A stranger's photo is an impostor probe for everybody; an enrolled person's photo is one for the
  *other* people, so false accepts are measured even without strangers;
- FAR(t) = impostor distances <= t, FRR(t) = genuine distances > t: the distance gate alone (the SVM can
  only turn more faces into "unknown"). The equal-error point and the threshold chosen for a target FAR
  come from these;
- TAR(t) / TRR(t): the real classifier (distance gate + SVM) naming enrolled people's queries right /
  calling strangers' photos unknown; false accepts = a stranger named, or an enrolled person named wrong.

Photos are embedded once through the normal enrollment path (`Gallery.process_photo`: MTCNN, dlib
alignment, the embedding cache keyed by photo hash and settings) in a cache folder of its own, never in
the live gallery. A photo with several faces and none dominant cannot be enrolled, but is still a query, as
in `identify`: its face is the one named as the folder's person if there is one, else
`recognizer.principal_face`. Detection quality against a dlib image-dataset XML is measured by `evaluate_detections`.

Modules: `metrics` (distances to rates and thresholds), `folders` (`eval` on photo folders), `tune`
(leave-one-out on the gallery), `detections` (against a dlib XML), `report` (text tables and the plot).
"""


class EvalError(ValueError):
    """Input that cannot be evaluated; str() says why."""
