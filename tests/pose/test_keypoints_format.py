"""POSE_KEYPOINT encoding, decoding, files and validation (nodes/keypoints.py).

Goldens: tests/golden/pose_cases.npz and pose_encoded.json, written by
tests/golden/make_pose_goldens.py from comfyui_controlnet_aux's own ``Wholebody.format_result``
+ ``encode_poses_as_dict`` (commit named in that script).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from marionette.nodes import keypoints as kp

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = ["single", "crowd", "edges", "partial"]  # the order of the frames in pose_encoded.json
EXTENSION_KEYS = ("foot_keypoints_2d", kp.CONFIDENCE_KEY)


@pytest.fixture(scope="module")
def golden():
    """Inputs and comfyui's encoding of them, made by tests/golden/make_pose_goldens.py."""
    cases = np.load(GOLDEN / "pose_cases.npz")
    encoded = json.loads((GOLDEN / "pose_encoded.json").read_text())
    return {name: (cases[f"{name}_keypoints"], *cases[f"{name}_size"].tolist(), encoded[i])
            for i, name in enumerate(CASES)}


def _without_extensions(frame: dict) -> dict:
    people = [{k: v for k, v in person.items() if k not in EXTENSION_KEYS} for person in frame["people"]]
    return {**frame, "people": people}


def _visible_only(kps: np.ndarray, threshold=0.3) -> np.ndarray:
    """What survives an encode/decode: visible points keep x, y, score; the rest are zeros."""
    out = np.where((kps[..., 2] >= threshold)[..., None], kps, 0).astype(np.float32)
    return out


def _random_dense(seed=0, frames=3, people=3, width=320, height=240):
    rng = np.random.default_rng(seed)
    kps = np.zeros((frames, people, 134, 3), np.float32)
    kps[..., 0] = rng.uniform(0, width, kps.shape[:3])
    kps[..., 1] = rng.uniform(0, height, kps.shape[:3])
    kps[..., 2] = rng.uniform(0, 1, kps.shape[:3])
    return kps


# --- equality with the reference encoder -----------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_encoder_matches_comfyui_controlnet_aux(golden, name):
    kps, width, height, reference = golden[name]
    (frame,) = kp.dense_to_pose_keypoint(kps[None], width, height)
    assert _without_extensions(frame) == reference  # every float, None and zero triple
    assert list(frame) == list(reference) == ["people", "canvas_height", "canvas_width"]
    for ours, theirs in zip(frame["people"], reference["people"]):
        assert list(ours)[:4] == list(theirs)


def test_encoder_extension_keys(golden):
    kps, width, height, _ = golden["crowd"]
    (frame,) = kp.dense_to_pose_keypoint(kps[None], width, height)
    for p, person in enumerate(frame["people"]):
        scores = np.array(person[kp.CONFIDENCE_KEY])
        np.testing.assert_array_equal(scores.astype(np.float32), kps[p, :, 2])  # raw scores, DWPose order
        assert max(len(repr(v)) for v in person[kp.CONFIDENCE_KEY]) <= 12     # float32's shortest repr
        feet = np.array(person["foot_keypoints_2d"]).reshape(6, 3)
        visible = kps[p, 18:24, 2] >= 0.3
        np.testing.assert_array_equal(feet[visible, :2], kps[p, 18:24][visible, :2])
        assert (feet[visible, 2] == 1.0).all() and (feet[~visible] == 0).all()


def test_reference_cases_cover_the_format_rules(golden):
    """The goldens exercise missing hands, missing faces, an empty body and an empty slot."""
    people = [p for name in CASES for p in golden[name][3]["people"]]
    assert any(p["hand_left_keypoints_2d"] is None for p in people)
    assert any(p["face_keypoints_2d"] is None for p in people)
    assert any(p["pose_keypoints_2d"] == [0.0] * 54 for p in people)
    assert all(len(p["face_keypoints_2d"]) == 210 for p in people if p["face_keypoints_2d"] is not None)


@pytest.mark.parametrize("name", CASES)
def test_reads_reference_json_back(golden, name):
    kps, width, height, _ = golden[name]
    frames = kp.load_json(GOLDEN / "pose_encoded.json")
    dense = kp.pose_keypoint_to_dense(frames)
    t = CASES.index(name)
    assert dense.keypoints.shape == (len(CASES), 3, 134, 3) and dense.keypoints.dtype == np.float32
    assert (dense.widths[t], dense.heights[t]) == (width, height)
    expected = _visible_only(kps)
    expected[..., 2] = np.where(expected[..., 2] > 0, 1.0, 0.0)  # comfyui keeps c = 1 only
    expected[:, 18:24] = 0  # and has no feet
    np.testing.assert_array_equal(dense.keypoints[t, :len(kps)], expected)
    assert (dense.keypoints[t, len(kps):] == 0).all()


# --- round trips ----------------------------------------------------------------------------

def test_round_trip_dense_dicts_file_dicts_dense(tmp_path):
    kps = _random_dense()
    kps[1, 2] = 0  # a padding slot in one frame only
    frames = kp.dense_to_pose_keypoint(kps, 320, 240)
    path = kp.save_json(frames, tmp_path / "sub" / "poses.json")
    assert path.read_text().startswith('[{"people": [{"pose_keypoints_2d": [')  # compact list, like comfyui
    loaded = kp.load_json(path)
    assert loaded == frames
    dense = kp.pose_keypoint_to_dense(loaded)
    np.testing.assert_array_equal(dense.keypoints, _visible_only(kps))  # raw scores come back
    assert dense.widths.tolist() == [320] * 3 and dense.heights.tolist() == [240] * 3
    assert len(frames[1]["people"]) == 2


def test_empty_slots_inside_are_kept_and_trailing_ones_dropped():
    kps = _random_dense(frames=1, people=4)
    kps[0, 1] = 0
    kps[0, 3] = 0
    (frame,) = kp.dense_to_pose_keypoint(kps, 320, 240)
    assert len(frame["people"]) == 3
    empty = frame["people"][1]
    assert empty["pose_keypoints_2d"] == [0.0] * 54 and empty["face_keypoints_2d"] is None
    dense = kp.pose_keypoint_to_dense([frame])
    assert dense.num_people == 3 and (dense.keypoints[0, 1] == 0).all()


def test_different_canvas_sizes_per_frame():
    kps = _random_dense(frames=2)
    frames = kp.dense_to_pose_keypoint(kps, [320, 100], [240, 50])
    assert [(f["canvas_width"], f["canvas_height"]) for f in frames] == [(320, 240), (100, 50)]
    dense = kp.pose_keypoint_to_dense(frames)
    assert dense.widths.tolist() == [320, 100] and dense.heights.tolist() == [240, 50]


# --- encoding rules -------------------------------------------------------------------------

def test_threshold_hands_face_and_eyes():
    kps = np.zeros((1, 1, 134, 3), np.float32)
    kps[0, 0, :, :2] = np.arange(268, dtype=np.float32).reshape(134, 2) + 0.25
    kps[0, 0, 0, 2] = np.float32(0.3)       # exactly at the threshold: present (>=)
    kps[0, 0, 1, 2] = np.float32(0.2999)    # just below: missing
    kps[0, 0, 14, 2] = 0.9                  # right eye, copied into the face as point 68
    kps[0, 0, 30, 2] = 0.8                  # one face point makes the face present
    kps[0, 0, 92:113, 2] = 0.1              # left hand entirely below: None
    kps[0, 0, 120, 2] = 0.5                 # one right-hand point
    (frame,) = kp.dense_to_pose_keypoint(kps, 640, 480)
    person = frame["people"][0]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_array_equal(body[0], [0.25, 1.25, 1.0])
    np.testing.assert_array_equal(body[1], [0, 0, 0])
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    np.testing.assert_array_equal(face[6], [kps[0, 0, 30, 0], kps[0, 0, 30, 1], 1.0])
    np.testing.assert_array_equal(face[68], [28.25, 29.25, 1.0])   # body point 14
    np.testing.assert_array_equal(face[69], [0, 0, 0])             # body point 15 is missing
    assert person["hand_left_keypoints_2d"] is None
    right = np.array(person["hand_right_keypoints_2d"]).reshape(21, 3)
    assert right[:, 2].tolist() == [0.0] * 7 + [1.0] + [0.0] * 13
    kps[0, 0, 30, 2] = 0.1
    assert kp.dense_to_pose_keypoint(kps, 640, 480)[0]["people"][0]["face_keypoints_2d"] is None
    kps[0, 0, 0, 2] = 0.5  # a score exactly equal to the threshold is present
    assert kp.dense_to_pose_keypoint(kps, 640, 480, threshold=0.5)[0]["people"][0]["pose_keypoints_2d"][2] == 1.0


def test_non_finite_points_are_missing():
    kps = _random_dense(frames=1, people=1)
    kps[0, 0, :, 2] = 1.0
    kps[0, 0, 3, 0] = np.nan
    kps[0, 0, 4, 2] = np.inf
    person = kp.dense_to_pose_keypoint(kps, 320, 240)[0]["people"][0]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    assert (body[3] == 0).all() and (body[4] == 0).all() and (body[5] != 0).all()
    assert person[kp.CONFIDENCE_KEY][3:6] == [0.0, 0.0, 1.0]  # unusable points score 0
    json.dumps(person, allow_nan=False)


def test_dense_to_pose_keypoint_checks_its_inputs():
    with pytest.raises(ValueError, match=r"shape \[frames, people, 134, 3\], got \[2, 134, 3\]"):
        kp.dense_to_pose_keypoint(np.zeros((2, 134, 3)), 64, 64)
    with pytest.raises(ValueError, match="width has 2 entries but the keypoints have 3 frames"):
        kp.dense_to_pose_keypoint(np.zeros((3, 1, 134, 3)), [64, 64], 64)
    with pytest.raises(ValueError, match="height must be a positive whole number of pixels, got 0"):
        kp.dense_to_pose_keypoint(np.zeros((1, 1, 134, 3)), 64, 0)


# --- reading other producers ----------------------------------------------------------------

def _person(**parts):
    return {"pose_keypoints_2d": [0.0] * 54, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
            "hand_right_keypoints_2d": None, **parts}


def test_marionette_confidence_only_where_the_lists_hold_a_point():
    body = [0.0] * 54
    body[0:3] = [10.0, 20.0, 1.0]   # present, raw score 0.42
    body[3:6] = [0.0, 0.0, 0.0]     # deleted in an editor; the stale raw score must not revive it
    conf = [0.0] * 134
    conf[0], conf[1] = 0.42, 0.9
    dense = kp.pose_keypoint_to_dense([{"people": [_person(pose_keypoints_2d=body, marionette_confidence=conf)],
                                        "canvas_width": 64, "canvas_height": 64}])
    np.testing.assert_allclose(dense.keypoints[0, 0, 0], [10, 20, 0.42], rtol=1e-6)
    assert (dense.keypoints[0, 0, 1] == 0).all()
    without = kp.pose_keypoint_to_dense([{"people": [_person(pose_keypoints_2d=body)],
                                          "canvas_width": 64, "canvas_height": 64}])
    assert without.keypoints[0, 0, 0, 2] == 1.0


def test_openpose_body25_nested_triples_and_68_point_face():
    rng = np.random.default_rng(3)
    body25 = np.concatenate([rng.uniform(5, 60, (25, 2)), rng.uniform(0.1, 1, (25, 1))], 1)
    face68 = np.concatenate([rng.uniform(5, 60, (68, 2)), np.full((68, 1), 0.7)], 1)
    frame = {"version": 1.3, "canvas_width": 64, "canvas_height": 64,
             "people": [{"person_id": [-1], "pose_keypoints_2d": body25.ravel().tolist(),
                         "face_keypoints_2d": face68.tolist(),  # nested [[x, y, c], ...]
                         "hand_left_keypoints_2d": [], "pose_keypoints_3d": []}]}
    dense = kp.pose_keypoint_to_dense(frame).keypoints[0, 0]  # a single dict is one frame
    body18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    np.testing.assert_allclose(dense[:18], body25[body18], rtol=1e-6)      # mid-hip (8) dropped
    np.testing.assert_allclose(dense[18:24], body25[19:25], rtol=1e-6)     # BODY_25 feet
    np.testing.assert_allclose(dense[24:92], face68, rtol=1e-6)
    assert (dense[92:] == 0).all()
    frame["people"][0]["foot_keypoints_2d"] = [1.0, 2.0, 1.0] * 6          # an explicit foot key wins
    assert kp.pose_keypoint_to_dense(frame).keypoints[0, 0, 18].tolist() == [1.0, 2.0, 1.0]


def test_comfyui_frames_without_foot_key_and_normalised_coordinates():
    body = [0.0] * 54
    body[0:6] = [0.25, 0.5, 1.0, 0.75, 1.0, 1.0]
    dense = kp.pose_keypoint_to_dense([{"people": [_person(pose_keypoints_2d=body)],
                                        "canvas_width": 200, "canvas_height": 100}])
    np.testing.assert_array_equal(dense.keypoints[0, 0, :2], [[50, 50, 1], [150, 100, 1]])
    assert (dense.keypoints[0, 0, 18:24] == 0).all()


def test_frames_without_people_and_empty_lists():
    dense = kp.pose_keypoint_to_dense([{"canvas_width": 8, "canvas_height": 4}, {"people": [], "canvas_width": 8,
                                                                                 "canvas_height": 4}])
    assert dense.keypoints.shape == (2, 0, 134, 3)
    assert kp.dense_to_pose_keypoint(dense.keypoints, 8, 4) == [
        {"people": [], "canvas_height": 4, "canvas_width": 8}] * 2


# --- load_json errors -----------------------------------------------------------------------

def _frame(**over):
    frame = {"people": [_person()], "canvas_width": 64, "canvas_height": 48}
    frame.update(over)
    return frame


ERRORS = [
    ("{not json", r"is not valid JSON: .*\(line 1, column 2\)"),
    ("42", r"expected a list of frame dicts, got int"),
    ('{"frames": []}', r"expected a list of frames .* got a dict with keys \['frames'\]"),
    ("[[1, 2]]", r"frame 0: expected a dict with 'people', 'canvas_width', 'canvas_height', got list"),
    (json.dumps([_frame(), {"people": []}]), r"frame 1: missing 'canvas_width'.*add both keys"),
    (json.dumps([_frame(canvas_height=0)]),
     r"frame 0: 'canvas_height' must be a positive whole number of pixels, got 0"),
    (json.dumps([_frame(canvas_width=12.5)]), r"frame 0: 'canvas_width' must be .*, got 12\.5"),
    (json.dumps([_frame(canvas_width="512")]), r"frame 0: 'canvas_width' must be .*, got '512'"),
    (json.dumps([_frame(people={"a": 1})]), r"frame 0: 'people' must be a list, got dict"),
    (json.dumps([_frame(), _frame(people=[_person(), 3])]),
     r"frame 1, person 1: expected a dict of keypoint arrays, got int"),
    (json.dumps([_frame(people=[_person(pose_keypoints_2d=[0.0] * 51)])]),
     r"frame 0, person 0: 'pose_keypoints_2d' has 51 numbers; "
     r"expected 54 \(18 points × \[x, y, c\]\) or 75 \(25 points"),
    (json.dumps([_frame(people=[_person(hand_left_keypoints_2d=[0.0] * 60)])]),
     r"'hand_left_keypoints_2d' has 60 numbers; expected 63 \(21 points"),
    (json.dumps([_frame(people=[_person(face_keypoints_2d=[0.0] * 3)])]),
     r"'face_keypoints_2d' has 3 numbers; expected 210 \(70 points × \[x, y, c\]\) or 204 \(68 points"),
    (json.dumps([_frame(people=[_person(foot_keypoints_2d=[0.0] * 17 + ["x"])])]),
     r"'foot_keypoints_2d' must hold only numbers, found 'x'"),
    (json.dumps([_frame(people=[_person(hand_right_keypoints_2d=[[1, 2]] * 21)])]),
     r"not all are \[x, y, c\] triples"),
    (json.dumps([_frame(people=[_person(marionette_confidence=[1.0] * 133)])]),
     r"'marionette_confidence' must be a list of 134 numbers"),
    (json.dumps([{"animals": [[[1, 2, 1]]], "canvas_width": 8, "canvas_height": 8}]),
     r"frame 0: holds animal keypoints"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_load_json_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        kp.load_json(path)
    assert str(path) in str(info.value)


def test_load_json_missing_file_and_single_frame(tmp_path):
    with pytest.raises(FileNotFoundError, match="pose keypoint file not found"):
        kp.load_json(tmp_path / "nope.json")
    path = tmp_path / "one.json"
    path.write_text(json.dumps(_frame()))
    assert kp.load_json(path) == [_frame()]


def test_save_json_refuses_nan_and_writes_numpy_values(tmp_path):
    frame = _frame()
    frame["people"][0]["pose_keypoints_2d"] = [float("nan")] * 54
    with pytest.raises(ValueError, match=re.escape("write missing points as [0, 0, 0]")):
        kp.save_json([frame], tmp_path / "nan.json")
    frame = _frame(canvas_width=np.int64(64))
    frame["people"][0]["pose_keypoints_2d"] = list(np.zeros(54, np.float32))
    path = kp.save_json([frame], tmp_path / "np.json")
    assert json.loads(path.read_text())[0]["canvas_width"] == 64


# --- scale_keypoints ------------------------------------------------------------------------

def test_scale_keypoints_scales_present_points_only_and_copies():
    kps = _random_dense(frames=2, people=2)
    frames = kp.dense_to_pose_keypoint(kps, 320, 240)
    before = json.dumps(frames)
    scaled = kp.scale_keypoints(frames, 640, 120)
    assert json.dumps(frames) == before  # the input is untouched
    assert all((f["canvas_width"], f["canvas_height"]) == (640, 120) for f in scaled)
    dense, dense_scaled = kp.pose_keypoint_to_dense(frames), kp.pose_keypoint_to_dense(scaled)
    np.testing.assert_allclose(dense_scaled.keypoints[..., 0], dense.keypoints[..., 0] * 2, rtol=1e-6)
    np.testing.assert_allclose(dense_scaled.keypoints[..., 1], dense.keypoints[..., 1] * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(dense_scaled.keypoints[..., 2], dense.keypoints[..., 2])
    missing = np.array(scaled[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    assert ((missing[:, 2] == 0) <= (missing[:, 0] == 0)).all()


def test_scale_keypoints_leaves_normalised_people():
    body = [0.0] * 54
    body[0:3] = [0.5, 0.5, 1.0]
    scaled = kp.scale_keypoints([_frame(people=[_person(pose_keypoints_2d=body)])], 128, 96)
    assert scaled[0]["people"][0]["pose_keypoints_2d"][:3] == [0.5, 0.5, 1.0]
    assert kp.pose_keypoint_to_dense(scaled).keypoints[0, 0, 0, :2].tolist() == [64.0, 48.0]
