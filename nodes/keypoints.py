"""POSE_KEYPOINT: the keypoint link format every Marionette stage reads and writes.

On a link (and in .json files) keypoints are exactly what comfyui_controlnet_aux's DWPose node
emits (``encode_poses_as_dict``), so its nodes and ours can be chained either way::

    [{"people": [{"pose_keypoints_2d":      18 × [x, y, c]  (OpenPose-18 body, flat list),
                  "face_keypoints_2d":      70 × [x, y, c] or None,
                  "hand_left_keypoints_2d": 21 × [x, y, c] or None,
                  "hand_right_keypoints_2d":21 × [x, y, c] or None,
                  "foot_keypoints_2d":       6 × [x, y, c],          # Marionette extension
                  "marionette_confidence": 134 × score}],            # Marionette extension
      "canvas_height": H, "canvas_width": W},
     ...one dict per frame]

What the comfyui encoder writes, and so what we write:

* x, y are absolute pixels of the canvas (OpenCV convention: pixel centres at integers),
  written unrounded as the float of the detector's value.
* A point is present when its score is >= 0.3 and is then written with c = 1.0; a missing
  point is ``[0.0, 0.0, 0.0]``. Its decoder keeps only points with c >= 1.
* The body is always 18 points (all zeros when none is present). A hand or face with no present
  point is ``None``. The face is DWPose's 68 points followed by the body's points 14 and 15
  (the eyes) as points 68 and 69: OpenPose faces have 70 points.
* Key order: people, canvas_height, canvas_width.

Marionette adds two per-person keys that readers ignoring unknown keys never see:
``foot_keypoints_2d`` (DWPose points 18-23) and ``marionette_confidence``, the 134 raw
detector scores in DWPose order, because c = 1 loses them.

Internally keypoints are a dense float32 array ``[T, P, 134, 3]`` (x, y in pixels, score) in
DWPose-134 order: 0-17 OpenPose-18 body (with neck), 18-23 feet (L big toe, L small toe,
L heel, R big toe, R small toe, R heel), 24-91 face, 92-112 left hand, 113-133 right hand.
P is the largest number of people in any frame; missing people and points are zeros.

Reading also accepts what other producers write (see ``pose_keypoint_to_dense``): lists of
``[x, y, c]`` triples instead of flat lists, a 68-point face, OpenPose BODY_25 bodies (25
points: mid-hip dropped, its 6 foot points used when there is no ``foot_keypoints_2d``), real
confidences instead of 1.0, and coordinates normalised to 0..1 (as some editors write).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUM_KEYPOINTS = 134
BODY = slice(0, 18)
FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)
BODY_EYES = (14, 15)            # comfyui pads the 68-point face with these two body points
DEFAULT_THRESHOLD = 0.3         # comfyui_controlnet_aux / DWPose visibility threshold
CONFIDENCE_KEY = "marionette_confidence"

# Accepted lengths (in points) of each per-person array.
_LENGTHS = {
    "pose_keypoints_2d": (18, 25),
    "face_keypoints_2d": (70, 68),
    "hand_left_keypoints_2d": (21,),
    "hand_right_keypoints_2d": (21,),
    "foot_keypoints_2d": (6,),
}
_DESCRIPTIONS = {
    "pose_keypoints_2d": "OpenPose-18 body, or OpenPose BODY_25",
    "face_keypoints_2d": "70-point OpenPose face, or DWPose's 68",
    "hand_left_keypoints_2d": "21-point hand",
    "hand_right_keypoints_2d": "21-point hand",
    "foot_keypoints_2d": "DWPose feet: L big toe, L small toe, L heel, R big toe, R small toe, R heel",
}
# OpenPose BODY_25 -> OpenPose-18 (BODY_25 adds mid-hip at 8 and six foot points at 19-24,
# which are in DWPose's foot order already).
_BODY25_TO_BODY18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_BODY25_FEET = (19, 20, 21, 22, 23, 24)


@dataclass
class PoseArrays:
    """Dense keypoints of a POSE_KEYPOINT list.

    Attributes:
        keypoints: float32 ``[T, P, 134, 3]``: x, y in pixels of frame t's canvas, then the
            score (0 for a missing point or person). DWPose-134 order, P = most people in a frame.
        widths: int64 ``[T]``, canvas width of each frame in pixels.
        heights: int64 ``[T]``, canvas height of each frame in pixels.
    """

    keypoints: np.ndarray
    widths: np.ndarray
    heights: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[1])


# ---------------------------------------------------------------------------------------------
# Dense -> POSE_KEYPOINT
# ---------------------------------------------------------------------------------------------

def _triples(points: np.ndarray, visible: np.ndarray) -> list[float]:
    """Flat ``[x, y, 1.0, ...]`` with ``[0, 0, 0]`` for points that are not visible."""
    out = np.zeros((len(points), 3), dtype=np.float64)
    out[visible, :2] = points[visible, :2]
    out[visible, 2] = 1.0
    return out.ravel().tolist()


def _person_dict(person: np.ndarray, threshold: float) -> dict:
    xy_ok = np.isfinite(person).all(axis=1)
    visible = xy_ok & (person[:, 2] >= threshold)
    face = None
    if visible[FACE].any():
        # comfyui appends the two body eyes (present or not) to DWPose's 68 face points.
        eyes = list(BODY_EYES)
        face = _triples(person[FACE], visible[FACE]) + _triples(person[eyes], visible[eyes])
    hands = [_triples(person[s], visible[s]) if visible[s].any() else None
             for s in (LEFT_HAND, RIGHT_HAND)]
    # float32 scores written with their shortest repr: exact for float32, half the text.
    scores = [float(str(v)) for v in np.where(xy_ok, person[:, 2], 0.0).astype(np.float32)]
    return {
        "pose_keypoints_2d": _triples(person[BODY], visible[BODY]),
        "face_keypoints_2d": face,
        "hand_left_keypoints_2d": hands[0],
        "hand_right_keypoints_2d": hands[1],
        "foot_keypoints_2d": _triples(person[FEET], visible[FEET]),
        CONFIDENCE_KEY: scores,
    }


def _per_frame(value, num_frames: int, name: str) -> list[int]:
    values = [value] * num_frames if np.ndim(value) == 0 else list(value)
    if len(values) != num_frames:
        raise ValueError(f"{name} has {len(values)} entries but the keypoints have {num_frames} frames; "
                         f"pass one {name} or one per frame.")
    out = []
    for v in values:
        if not _is_number(v) or not float(v).is_integer() or int(v) <= 0:
            raise ValueError(f"{name} must be a positive whole number of pixels, got {v!r}.")
        out.append(int(v))
    return out


def dense_to_pose_keypoint(kps: np.ndarray, width, height, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Encode dense keypoints as a POSE_KEYPOINT list, as comfyui_controlnet_aux does.

    Args:
        kps: ``[T, P, 134, 3]`` x, y in pixels and score, DWPose-134 order.
        width, height: canvas size in pixels, one int or one per frame.
        threshold: a point is written as present (c = 1.0) when its score is >= threshold,
            comfyui_controlnet_aux's rule with 0.3.

    Returns:
        One dict per frame. Each person slot up to the last slot holding a score > 0 is
        written (an empty slot before it becomes a person with no present point, so person
        indices survive a round trip); trailing empty slots are padding and are left out.
    """
    kps = np.asarray(kps)
    if kps.ndim != 4 or kps.shape[2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [frames, people, {NUM_KEYPOINTS}, 3], got {list(kps.shape)}.")
    widths = _per_frame(width, kps.shape[0], "width")
    heights = _per_frame(height, kps.shape[0], "height")
    frames = []
    for frame, w, h in zip(kps, widths, heights):
        scores = np.nan_to_num(frame[:, :, 2].astype(np.float64), nan=0.0)
        used = np.flatnonzero((scores > 0).any(axis=1))
        count = int(used[-1]) + 1 if used.size else 0
        people = [_person_dict(frame[p].astype(np.float64), threshold) for p in range(count)]
        frames.append({"people": people, "canvas_height": h, "canvas_width": w})
    return frames


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _all_numbers(values) -> bool:
    # Fast path for what JSON gives; numpy scalars take the slow one. bool is not a number.
    return all(type(v) is float or type(v) is int for v in values) or all(_is_number(v) for v in values)


def _flat_values(values, where: str, key: str) -> list | None:
    """The numbers of one per-person array, flattening ``[[x, y, c], ...]``; None when absent."""
    if values is None or (isinstance(values, (list, tuple)) and len(values) == 0):
        return None
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: '{key}' must be a list of numbers or null, got {type(values).__name__}.")
    if all(isinstance(v, (list, tuple)) for v in values):
        if any(len(v) != 3 for v in values):
            raise ValueError(f"{where}: '{key}' is a list of points but not all are [x, y, c] triples.")
        values = [n for v in values for n in v]
    if not _all_numbers(values):
        bad = next(v for v in values if not _is_number(v))
        raise ValueError(f"{where}: '{key}' must hold only numbers, found {bad!r}.")
    allowed = _LENGTHS[key]
    if len(values) not in [3 * n for n in allowed]:
        expected = " or ".join(f"{3 * n} ({n} points × [x, y, c])" for n in allowed)
        raise ValueError(f"{where}: '{key}' has {len(values)} numbers; expected {expected}: "
                         f"{_DESCRIPTIONS[key]}.")
    return values


def _canvas_size(frame: dict, key: str, where: str) -> int:
    if key not in frame:
        raise ValueError(f"{where}: missing '{key}'. Each frame needs 'canvas_width' and 'canvas_height', "
                         f"the image size in pixels its keypoints refer to (OpenPose's own JSON has none: "
                         f"add both keys to every frame).")
    value = frame[key]
    if not _is_number(value) or not float(value).is_integer() or value <= 0:
        raise ValueError(f"{where}: '{key}' must be a positive whole number of pixels, got {value!r}.")
    return int(value)


def _frame_list(frames: Any, source: str) -> list:
    if isinstance(frames, dict):
        if "people" not in frames and "canvas_width" not in frames:
            raise ValueError(f"{source}: expected a list of frames (or one frame dict with 'people', "
                             f"'canvas_width', 'canvas_height'); got a dict with keys {sorted(frames)[:8]}.")
        frames = [frames]
    if not isinstance(frames, (list, tuple)):
        raise ValueError(f"{source}: expected a list of frame dicts, got {type(frames).__name__}.")
    return list(frames)


def _check_frame(frame: Any, where: str) -> tuple[int, int, list]:
    """Canvas width, height and people of one frame."""
    if not isinstance(frame, dict):
        raise ValueError(f"{where}: expected a dict with 'people', 'canvas_width', 'canvas_height', "
                         f"got {type(frame).__name__}.")
    width, height = _canvas_size(frame, "canvas_width", where), _canvas_size(frame, "canvas_height", where)
    if "people" not in frame and frame.get("animals"):
        raise ValueError(f"{where}: holds animal keypoints ('animals', AP-10K), not people.")
    people = frame.get("people", [])
    if not isinstance(people, (list, tuple)):
        raise ValueError(f"{where}: 'people' must be a list, got {type(people).__name__}.")
    return width, height, list(people)


def _parse_person(person: Any, where: str) -> tuple[dict, np.ndarray | None]:
    """Each keypoint array of a person as ``[n, 3]`` float64 (None when absent), and the
    ``marionette_confidence`` scores (None when absent)."""
    if not isinstance(person, dict):
        raise ValueError(f"{where}: expected a dict of keypoint arrays, got {type(person).__name__}.")
    parts = {}
    for key in _LENGTHS:
        values = _flat_values(person.get(key), where, key)
        parts[key] = None if values is None else np.asarray(values, dtype=np.float64).reshape(-1, 3)
    conf = person.get(CONFIDENCE_KEY)
    if conf is not None:
        if not isinstance(conf, (list, tuple)) or len(conf) != NUM_KEYPOINTS or not _all_numbers(conf):
            raise ValueError(f"{where}: '{CONFIDENCE_KEY}' must be a list of {NUM_KEYPOINTS} numbers "
                             f"(scores in DWPose-134 order) or be left out.")
        conf = np.asarray(conf, dtype=np.float64)
    return parts, conf


def check_pose_keypoint(frames: Any, source: str = "POSE_KEYPOINT") -> list[dict]:
    """Validate a POSE_KEYPOINT value and return it as a list of frame dicts.

    A single frame dict is accepted and wrapped in a list. Raises ``ValueError`` naming
    ``source``, the frame and person index, the key and what was expected.
    """
    frames = _frame_list(frames, source)
    for i, frame in enumerate(frames):
        _, _, people = _check_frame(frame, f"{source}: frame {i}")
        for j, person in enumerate(people):
            _parse_person(person, f"{source}: frame {i}, person {j}")
    return frames


# ---------------------------------------------------------------------------------------------
# POSE_KEYPOINT -> dense
# ---------------------------------------------------------------------------------------------

def _dense_person(parts: dict, conf: np.ndarray | None, width: int, height: int) -> np.ndarray:
    out = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
    body = parts["pose_keypoints_2d"]
    if body is not None:
        if len(body) == 25:
            if parts["foot_keypoints_2d"] is None:
                out[FEET] = body[list(_BODY25_FEET)]
            body = body[list(_BODY25_TO_BODY18)]
        out[BODY] = body
    for key, part in (("foot_keypoints_2d", FEET), ("hand_left_keypoints_2d", LEFT_HAND),
                      ("hand_right_keypoints_2d", RIGHT_HAND)):
        if parts[key] is not None:
            out[part] = parts[key]
    if parts["face_keypoints_2d"] is not None:
        out[FACE] = parts["face_keypoints_2d"][:68]  # 68/69 are the body eyes (comfyui) or pupils (OpenPose)
    present = out[:, 2] > 0
    if conf is not None:
        # Use the raw scores, but only where the lists hold the point: a point deleted from a
        # list (say, in a pose editor) stays deleted.
        out[:, 2] = np.where(present, conf, 0.0)
    if _normalised(out[present, :2]):
        out[present, :2] *= (width, height)
    return out


def _normalised(xy: np.ndarray) -> bool:
    """Present points all within 0..1: normalised coordinates (no real pose fits in a pixel)."""
    return bool(xy.size) and bool((xy >= 0).all() and (xy <= 1).all())


def pose_keypoint_to_dense(frames: Any) -> PoseArrays:
    """Decode a POSE_KEYPOINT list (ours, comfyui_controlnet_aux's, or OpenPose-style) to dense.

    Per person, the score of a point is ``marionette_confidence`` when present and the point is
    in its list (c > 0), else c (1.0 for comfyui, the real confidence for OpenPose JSON).
    Points with c = 0 are missing. A person whose present points all lie in 0..1 is taken as
    normalised and scaled to the canvas.

    Returns:
        PoseArrays with keypoints ``[T, P, 134, 3]`` float32 (P = most people in a frame).
    """
    frames = _frame_list(frames, "POSE_KEYPOINT")
    checked = [_check_frame(frame, f"POSE_KEYPOINT: frame {t}") for t, frame in enumerate(frames)]
    num_people = max((len(people) for _, _, people in checked), default=0)
    kps = np.zeros((len(frames), num_people, NUM_KEYPOINTS, 3), dtype=np.float32)
    for t, (width, height, people) in enumerate(checked):
        for p, person in enumerate(people):
            parts, conf = _parse_person(person, f"POSE_KEYPOINT: frame {t}, person {p}")
            kps[t, p] = _dense_person(parts, conf, width, height)
    widths = np.array([w for w, _, _ in checked], dtype=np.int64)
    heights = np.array([h for _, h, _ in checked], dtype=np.int64)
    return PoseArrays(kps, widths, heights)


# ---------------------------------------------------------------------------------------------
# Files and helpers
# ---------------------------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_json(frames: Any, path: str | Path) -> Path:
    """Write a POSE_KEYPOINT list to ``path`` as comfyui_controlnet_aux's "Save Pose Keypoints"
    node does (one JSON list, compact). Validates first; NaN or infinite values are refused."""
    frames = check_pose_keypoint(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(frames, default=_json_default, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"cannot save pose keypoints to {path}: {exc} (NaN or infinite coordinates; "
                         f"write missing points as [0, 0, 0]).") from None
    path.write_text(text, encoding="utf-8")
    return path


def load_json(path: str | Path) -> list[dict]:
    """Read and validate a pose keypoint .json file: a list of frame dicts (or one frame dict).

    The frames are returned as stored (a single frame is wrapped in a list); variants written
    by other producers are understood by ``pose_keypoint_to_dense``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or not POSE_KEYPOINT (the message names frame, person and key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose keypoint file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file; expected pose keypoints as JSON.") from None
    return check_pose_keypoint(data, source=str(path))


def scale_keypoints(frames: Any, new_w: int, new_h: int) -> list[dict]:
    """Rescale a POSE_KEYPOINT list to a new canvas size (e.g. after resizing the images).

    Present points (c > 0) are scaled by new/old canvas size per frame; missing points stay
    ``[0, 0, 0]``; normalised people are left as they are. Returns new dicts (the input, which
    ComfyUI may share between nodes, is not modified); arrays are written as flat lists.
    """
    frames = check_pose_keypoint(frames)
    new_w, new_h = _per_frame(new_w, 1, "new_w")[0], _per_frame(new_h, 1, "new_h")[0]
    out = []
    for frame in frames:
        sx, sy = new_w / frame["canvas_width"], new_h / frame["canvas_height"]
        frame = copy.deepcopy(frame)
        for person in frame.get("people", []):
            parts, _ = _parse_person(person, "person")
            present = [pts[pts[:, 2] > 0, :2] for pts in parts.values() if pts is not None]
            if _normalised(np.concatenate(present) if present else np.zeros((0, 2))):
                continue
            for key, pts in parts.items():
                if pts is not None:
                    pts[pts[:, 2] > 0, :2] *= (sx, sy)
                    person[key] = pts.ravel().tolist()
        frame["canvas_width"], frame["canvas_height"] = new_w, new_h
        out.append(frame)
    return out
