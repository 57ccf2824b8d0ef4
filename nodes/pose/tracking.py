"""Follow one person through a video from per-frame detections.

Plain numpy, no model and no ComfyUI: the input is what the pose estimator found in every frame
(boxes ``[N, 4]`` xyxy pixels and keypoints ``[N, K, 3]`` = x, y pixels, score, in DWPose-134
order), the output is one person per frame.

How it works:

1. **Link** every detection into tracks, frame by frame. Each track predicts where its person is
   (last match moved by its per-frame velocity); similarity to a candidate =
   ``iou_weight`` × box IoU + (1 − ``iou_weight``) × exp(−d / σ), with d the median distance of
   the body keypoints visible in both, in units of the person's size (the longer box side).
   Pairs are matched greedily, most similar first, when similarity reaches ``min_similarity``;
   unmatched detections start new tracks. Because every person has a track, one who crosses in
   front of the followed person is claimed by their own track and cannot take over, even in the
   frames where the followed person is hidden. σ widens by half for every frame a track has gone
   unseen (up to 8 frames), so a person who reappears after an occlusion or a missed detection
   is picked up again while a stranger elsewhere in the frame is not.
2. **Choose** the track to follow: among the first ``select_frames`` frames that have people,
   the detection with the best score (``follow="largest"``: box area; ``"centre"``: closeness
   of the box centre to the image centre, area breaking ties) names the track.
3. **Fill** gaps of at most ``max_gap_frames`` frames that have a match on both sides by linear
   interpolation of the keypoints visible on both sides (others stay (0, 0, 0)); longer gaps, and
   frames before the first / after the last match, stay empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

FOLLOW_MODES = ("largest", "centre")
_FOLLOW_ALIASES = {"center": "centre", "most central": "centre", "central": "centre", "biggest": "largest"}

# Body points used to compare poses: the 18 OpenPose points without the neck (it is derived from
# the shoulders and would count them twice) plus the 6 feet points.
_BODY = np.array([0, *range(2, 24)])


@dataclass
class TrackConfig:
    """Settings of :func:`follow_person`.

    Args:
        follow: ``"largest"`` or ``"centre"`` (also ``"center"``): who to follow when several
            people are visible in the first frames.
        select_frames: how many of the first frames with people take part in the choice.
        max_gap_frames: longest run of frames without a match that is filled by interpolation
            (0 disables filling).
        iou_weight: share of the box IoU in the similarity (the rest is keypoint agreement).
        keypoint_sigma: keypoint distance, in person sizes (longer box side), at which keypoint
            agreement falls to 1/e between consecutive frames.
        min_similarity: a detection less similar than this to a track's prediction is never
            linked to that track.
        keypoint_threshold: a keypoint counts as visible above this score (DWPose's 0.3).
        max_lost_frames: a track unseen for longer ends; its person, if they come back, starts
            a new track (and is not followed any more).
    """

    follow: str = "largest"
    select_frames: int = 5
    max_gap_frames: int = 8
    iou_weight: float = 0.4
    keypoint_sigma: float = 0.25
    min_similarity: float = 0.3
    keypoint_threshold: float = 0.3
    max_lost_frames: int = 30

    def __post_init__(self):
        self.follow = normalise_follow(self.follow)
        if self.max_gap_frames < 0:
            raise ValueError(f"max_gap_frames must be 0 or more, got {self.max_gap_frames}")
        if self.select_frames < 1:
            raise ValueError(f"select_frames must be at least 1, got {self.select_frames}")


def normalise_follow(follow: str) -> str:
    """``follow`` as one of :data:`FOLLOW_MODES`; a ``ValueError`` listing them otherwise."""
    mode = _FOLLOW_ALIASES.get(str(follow).strip().lower(), str(follow).strip().lower())
    if mode not in FOLLOW_MODES:
        raise ValueError(f"follow must be one of {list(FOLLOW_MODES)}, got {follow!r}")
    return mode


@dataclass
class Track:
    """One followed person over ``T`` frames.

    Attributes:
        index: ``[T]`` int, index of the followed person among the frame's candidates, −1 when
            not matched (filled or missing).
        keypoints: ``[T, K, 3]`` float32 (x, y pixels, score); (0, 0, 0) rows where nobody.
        boxes: ``[T, 4]`` float32 xyxy pixels of the match, NaN where not matched.
        found: ``[T]`` bool, frames matched to a detection.
        filled: ``[T]`` bool, frames filled by interpolation.
    """

    index: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    filled: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.filled is None:
            self.filled = np.zeros_like(self.found)

    @property
    def missing_frames(self) -> list[int]:
        """Frames with neither a match nor a filled pose."""
        return [int(t) for t in np.flatnonzero(~(self.found | self.filled))]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` (xyxy) → ``[N, M]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def selection_scores(boxes: np.ndarray, width: int, height: int, follow: str) -> np.ndarray:
    """How well each box ``[N, 4]`` fits ``follow``; higher is better.

    ``largest``: area as a fraction of the image. ``centre``: 1 − distance of the box centre
    from the image centre in half-diagonals, plus a hundredth of the area fraction so that of
    two equally central people the larger wins."""
    follow = normalise_follow(follow)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1) / float(width * height)
    if follow == "largest":
        return area
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half_diag = 0.5 * np.hypot(width, height)
    dist = np.linalg.norm(centre - np.array([width / 2, height / 2]), axis=-1) / half_diag
    return 1.0 - dist + 0.01 * area


def _pose_distance(kp_a: np.ndarray, kp_b: np.ndarray, size: float, thr: float) -> float | None:
    """Median distance between the body points visible in both, in units of ``size``; ``None``
    when fewer than three are shared."""
    a, b = kp_a[_BODY], kp_b[_BODY]
    both = (a[:, 2] > thr) & (b[:, 2] > thr)
    if both.sum() < 3:
        return None
    return float(np.median(np.linalg.norm(a[both, :2] - b[both, :2], axis=-1)) / max(size, 1e-6))


class _State:
    """What a track knows about its person: the last match and the per-frame velocity."""

    def __init__(self, t: int, box: np.ndarray, kps: np.ndarray):
        self.t, self.box, self.kps = t, box.astype(np.float64), kps.astype(np.float64)
        self.box_vel = np.zeros(4)
        self.kp_vel = np.zeros((kps.shape[0], 2))

    def predict(self, t: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Predicted box, keypoints and frames since the last match, at frame ``t``."""
        gap = t - self.t
        steps = min(gap, 10)  # constant velocity, capped: long extrapolation drifts more than it helps
        box = self.box + self.box_vel * steps
        kps = self.kps.copy()
        kps[:, :2] += self.kp_vel * steps
        return box, kps, gap

    def update(self, t: int, box: np.ndarray, kps: np.ndarray, thr: float) -> None:
        step = t - self.t  # > 1 after a gap: the velocity is the mean over the gap
        self.box_vel = (box - self.box) / step
        both = (kps[:, 2] > thr) & (self.kps[:, 2] > thr)
        # keypoints seen only on one side move with the box centre
        self.kp_vel[:] = (self.box_vel[:2] + self.box_vel[2:]) / 2
        self.kp_vel[both] = (kps[both, :2] - self.kps[both, :2]) / step
        self.t, self.box, self.kps = t, box.astype(np.float64), kps.astype(np.float64)


def _similarity(state: _State, t: int, boxes: np.ndarray, kps: np.ndarray, cfg: TrackConfig) -> np.ndarray:
    pbox, pkps, gap = state.predict(t)
    iou = box_iou(pbox[None], boxes)[0]
    size = float(max(np.max(pbox[2:] - pbox[:2]), 1.0))
    # a person unseen for a while may have moved further: allow half a sigma more per frame
    sigma = cfg.keypoint_sigma * (1.0 + 0.5 * (min(max(gap, 1), 8) - 1))
    pcentre = (pbox[:2] + pbox[2:]) / 2
    sims = np.empty(len(boxes))
    for i in range(len(boxes)):
        d = _pose_distance(pkps, kps[i], size, cfg.keypoint_threshold)
        if d is None:  # too few shared points: compare box centres instead
            d = float(np.linalg.norm((boxes[i, :2] + boxes[i, 2:]) / 2 - pcentre)) / size
        sims[i] = cfg.iou_weight * iou[i] + (1 - cfg.iou_weight) * np.exp(-d / sigma)
    return sims


def link_tracks(boxes: Sequence[np.ndarray], keypoints: Sequence[np.ndarray],
                config: TrackConfig | None = None) -> list[np.ndarray]:
    """Link detections into tracks over the frames (see the module docstring).

    Args:
        boxes: per frame, ``[N_t, 4]`` xyxy pixels.
        keypoints: per frame, ``[N_t, K, 3]`` (x, y pixels, score).

    Returns:
        per frame, ``[N_t]`` int track ids (0, 1, ... in order of appearance).
    """
    cfg = config or TrackConfig()
    states: dict[int, _State] = {}
    ids_per_frame, next_id = [], 0
    for t, (bx, kp) in enumerate(zip(boxes, keypoints)):
        ids = np.full(len(bx), -1, np.int64)
        for tid in [tid for tid, st in states.items() if t - st.t > cfg.max_lost_frames]:
            del states[tid]
        pairs = []
        for tid, st in states.items():
            if len(bx):
                sims = _similarity(st, t, bx, kp, cfg)
                pairs += [(sims[i], tid, i) for i in range(len(bx)) if sims[i] >= cfg.min_similarity]
        taken = set()
        for _, tid, i in sorted(pairs, key=lambda p: -p[0]):  # most similar first
            if tid in taken or ids[i] >= 0:
                continue
            ids[i] = tid
            taken.add(tid)
            states[tid].update(t, bx[i], kp[i], cfg.keypoint_threshold)
        for i in np.flatnonzero(ids < 0):  # nobody's continuation: a new track
            ids[i] = next_id
            states[next_id] = _State(t, bx[i], kp[i])
            next_id += 1
        ids_per_frame.append(ids)
    return ids_per_frame


def follow_person(
    boxes: Sequence[np.ndarray],
    keypoints: Sequence[np.ndarray],
    width: int,
    height: int,
    config: TrackConfig | None = None,
) -> Track:
    """Follow one person through ``T`` frames.

    Args:
        boxes: per frame, the candidates' boxes ``[N_t, 4]`` xyxy pixels (``N_t`` may be 0).
        keypoints: per frame, their keypoints ``[N_t, K, 3]`` (x, y pixels, score).
        width, height: frame size in pixels (for ``follow="centre"`` and the area fraction).
        config: see :class:`TrackConfig`.

    Returns:
        a :class:`Track`; ``track.found.any()`` is False when no frame had a candidate.
    """
    cfg = config or TrackConfig()
    if len(boxes) != len(keypoints):
        raise ValueError(f"boxes and keypoints must cover the same frames, got {len(boxes)} and {len(keypoints)}")
    T = len(boxes)
    boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
    K = next((np.shape(k)[1] for k in keypoints if np.ndim(k) == 3 and len(k)), 134)
    keypoints = [np.asarray(k, np.float64).reshape(-1, K, 3) for k in keypoints]

    track = Track(index=np.full(T, -1, np.int64), keypoints=np.zeros((T, K, 3), np.float32),
                  boxes=np.full((T, 4), np.nan, np.float32), found=np.zeros(T, bool))
    with_people = [t for t in range(T) if len(boxes[t])]
    if not with_people:
        return track

    ids = link_tracks(boxes, keypoints, cfg)
    best = None  # (score, frame, index): the best-scoring person over the first frames with people
    for t in with_people[: cfg.select_frames]:
        scores = selection_scores(boxes[t], width, height, cfg.follow)
        i = int(np.argmax(scores))
        if best is None or scores[i] > best[0] + 1e-9:
            best = (scores[i], t, i)
    followed = ids[best[1]][best[2]]

    for t in range(T):
        hit = np.flatnonzero(ids[t] == followed)
        if len(hit):
            i = int(hit[0])
            track.index[t], track.found[t] = i, True
            track.boxes[t] = boxes[t][i]
            track.keypoints[t] = keypoints[t][i]
    track.keypoints, track.filled = fill_gaps(track.keypoints, track.found, cfg.max_gap_frames,
                                              cfg.keypoint_threshold)
    return track


def fill_gaps(keypoints: np.ndarray, found: np.ndarray, max_gap_frames: int,
              threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate runs of at most ``max_gap_frames`` unmatched frames between two matches.

    Args:
        keypoints: ``[T, K, 3]`` (x, y, score); rows of unmatched frames are ignored.
        found: ``[T]`` bool, matched frames.
        max_gap_frames: longest run filled; 0 fills nothing.
        threshold: a keypoint is interpolated when its score is above this on both sides; its
            score is interpolated too. Other keypoints of a filled frame are (0, 0, 0).

    Returns:
        (keypoints ``[T, K, 3]`` float32, a copy; filled ``[T]`` bool).
    """
    kps = np.array(keypoints, np.float32, copy=True)
    found = np.asarray(found, bool)
    filled = np.zeros(len(found), bool)
    idx = np.flatnonzero(found)
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if gap == 0 or gap > max_gap_frames:
            continue
        both = (kps[a, :, 2] > threshold) & (kps[b, :, 2] > threshold)
        for t in range(a + 1, b):
            w = (t - a) / (b - a)
            row = np.zeros_like(kps[t])
            row[both] = (1 - w) * kps[a, both] + w * kps[b, both]
            kps[t] = row
            filled[t] = True
    return kps, filled
