"""Skeleton drawing (nodes/skeleton.py): pixel equality with the reference annotators and the
drawing conventions (champ_spec §9.4).

Goldens: tests/golden/pose_*.png and pose_cases.npz, written by
tests/golden/make_pose_goldens.py with comfyui_controlnet_aux's ``draw_poses`` ("controlnet_aux"
images) and huggingface controlnet_aux 0.0.10's original DWPose ``draw_pose`` ("dwpose"
images), both drawing with OpenCV 5.0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marionette.nodes import keypoints as kp
from marionette.nodes import skeleton as draw

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = ["single", "crowd", "edges", "partial"]
VARIANTS = {"all": (True, True, True), "body": (True, False, False), "handsface": (False, True, True)}


@pytest.fixture(scope="module")
def cases():
    """Seeded input poses; made by tests/golden/make_pose_goldens.py with the PNGs."""
    data = np.load(GOLDEN / "pose_cases.npz")
    return {name: (data[f"{name}_keypoints"], *data[f"{name}_size"].tolist()) for name in CASES}


def _golden(name: str) -> np.ndarray:
    """A reference drawing made by tests/golden/make_pose_goldens.py."""
    return np.asarray(Image.open(GOLDEN / f"pose_{name}.png").convert("RGB"))


# --- equality with the reference drawings ---------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CASES)
def test_matches_comfyui_controlnet_aux_pixel_for_pixel(cases, name, variant):
    kps, width, height = cases[name]
    image = draw.draw_pose(kps, width, height, *VARIANTS[variant], style="controlnet_aux")
    reference = _golden(f"{name}_controlnet_aux_{variant}")
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert reference.any()
    np.testing.assert_array_equal(image, reference)


@pytest.mark.parametrize("name", CASES)
def test_matches_original_dwpose_annotator_pixel_for_pixel(cases, name):
    kps, width, height = cases[name]
    np.testing.assert_array_equal(draw.draw_pose(kps, width, height), _golden(f"{name}_dwpose_all"))


def test_layer_orders_differ_where_people_overlap():
    """The crowd golden really tells the two styles apart (same people, different layering)."""
    assert (_golden("crowd_dwpose_all") != _golden("crowd_controlnet_aux_all")).any(axis=2).sum() > 50


def test_draw_frames_from_the_reference_json():
    """comfyui's "Render Pose JSON" path: its encoded dicts, drawn at their canvas size."""
    frames = kp.load_json(GOLDEN / "pose_encoded.json")
    for i, name in enumerate(CASES):
        images = draw.draw_frames(frames[i:i + 1], style="controlnet_aux")
        assert images.dtype == np.float32 and images.shape == (1, *_golden(f"{name}_controlnet_aux_all").shape)
        np.testing.assert_array_equal(np.rint(images[0] * 255).astype(np.uint8), _golden(f"{name}_controlnet_aux_all"))


# --- conventions ----------------------------------------------------------------------------

def _pose(points: dict, score: float = 1.0) -> np.ndarray:
    """One person ``[1, 134, 3]`` with only ``points`` {index: (x, y)} present."""
    kps = np.zeros((1, 134, 3), np.float32)
    for k, (x, y) in points.items():
        kps[0, k] = (x, y, score)
    return kps


def test_limb_colour_dimmed_and_joints_on_top():
    image = draw.draw_pose(_pose({1: (40, 50), 2: (80, 50)}), 120, 100)  # neck - right shoulder
    assert image[50, 60].tolist() == [153, 0, 0]      # limb 0 at its midpoint: (255, 0, 0) × 0.6
    assert image[46, 60].tolist() == [153, 0, 0]      # half-width 4 ...
    assert image[45, 60].tolist() == [0, 0, 0]        # ... and no more
    assert image[50, 40].tolist() == [255, 85, 0]     # joint 1 in full colour, over the limb
    assert image[50, 80].tolist() == [255, 170, 0]    # joint 2
    assert image[50, 45].tolist() == [153, 0, 0]      # joint radius 4: x = 44 is joint, 45 limb
    assert image[50, 44].tolist() == [255, 85, 0]


def test_joint_is_a_radius_4_disc_in_its_colour():
    image = draw.draw_pose(_pose({4: (30, 20)}), 64, 48)  # right wrist alone: no limb
    painted = image.any(axis=2)
    assert painted.sum() == 49
    ys, xs = np.nonzero(painted)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (26, 34, 16, 24)
    assert set(map(tuple, image[painted].tolist())) == {(170, 255, 0)}


def test_hand_edges_and_points():
    hand = {92 + k: (20 + 12 * k, 30) for k in range(5)}  # wrist + thumb chain, 12 px apart
    image = draw.draw_pose(_pose(hand), 100, 60)
    assert image[30, 20].tolist() == [0, 0, 255]             # hand points: blue discs radius 4
    assert image[30, 24].tolist() == [0, 0, 255]
    assert image[30, 25].tolist() == [255, 0, 0]             # edge 0 (wrist-thumb 1): HSV(0, 1, 1)
    assert image[31, 50].tolist() == [255, 153, 0]           # edge 2 (points 2-3): HSV(0.1, 1, 1)
    assert image[29, 50].tolist() == [255, 153, 0]           # thickness 2 covers y - 1 .. y + 1
    assert image[32, 50].tolist() == [0, 0, 0] and image[28, 50].tolist() == [0, 0, 0]
    assert draw.HAND_EDGE_COLORS[[0, 4, 10, 15]].tolist() == [[255, 0, 0], [204, 255, 0], [0, 255, 255],
                                                              [128, 0, 255]]


def test_face_points_are_white_radius_3():
    image = draw.draw_pose(_pose({40: (20, 20), 14: (50, 20)}), 70, 40)
    assert image[20, 20].tolist() == [255, 255, 255] and image[20, 23].tolist() == [255, 255, 255]
    assert image[20, 24].tolist() == [0, 0, 0] and image[23, 20].tolist() == [255, 255, 255]
    assert image[20, 50].tolist() == list(draw.BODY_COLORS[14])  # DWPose: the eye stays a joint
    eyes = draw.draw_pose(_pose({40: (20, 20), 14: (50, 20)}), 70, 40, style="controlnet_aux")
    assert eyes[20, 50].tolist() == [255, 255, 255]  # comfyui's 70-point face: white dot on the eye
    assert eyes[20, 54].tolist() == list(draw.BODY_COLORS[14])  # the joint's rim still shows


def test_switches_leave_parts_out():
    kps = _pose({1: (20, 20), 2: (40, 20), 95: (60, 20), 96: (70, 20), 50: (20, 40)})

    def colours(image):
        return set(map(tuple, image.reshape(-1, 3).tolist())) - {(0, 0, 0)}

    everything = colours(draw.draw_pose(kps, 90, 60))
    assert {(153, 0, 0), (0, 0, 255), (255, 255, 255)} <= everything
    assert colours(draw.draw_pose(kps, 90, 60, body=False)).isdisjoint({(153, 0, 0), (255, 85, 0)})
    assert (0, 0, 255) not in colours(draw.draw_pose(kps, 90, 60, hands=False))
    assert (255, 255, 255) not in colours(draw.draw_pose(kps, 90, 60, face=False))
    assert not draw.draw_pose(kps, 90, 60, body=False, hands=False, face=False).any()


def test_visibility_threshold_and_border_rule():
    assert draw.draw_pose(_pose({4: (30, 20)}, score=0.3), 64, 48).any()
    assert not draw.draw_pose(_pose({4: (30, 20)}, score=0.29), 64, 48).any()
    assert not draw.draw_pose(_pose({4: (30, 20)}, score=0.5), 64, 48, threshold=0.6).any()
    # At exactly the threshold: comfyui keeps every point (>=); the original DWPose annotator
    # keeps body points only above it (> 0.3) and hand/face points from it on (>= 0.3).
    assert draw.draw_pose(_pose({4: (30, 20)}, score=0.5), 64, 48, threshold=0.5, style="controlnet_aux").any()
    assert not draw.draw_pose(_pose({4: (30, 20)}, score=0.5), 64, 48, threshold=0.5, style="dwpose").any()
    assert draw.draw_pose(_pose({100: (30, 20)}, score=0.5), 64, 48, threshold=0.5, style="dwpose").any()
    # Hand and face points with int(x) or int(y) below 1 are skipped; body joints are not.
    assert not draw.draw_pose(_pose({100: (0.9, 20), 50: (20, 0.5)}), 64, 48).any()
    assert draw.draw_pose(_pose({100: (1.0, 20)}), 64, 48)[20, 1].tolist() == [0, 0, 255]
    assert draw.draw_pose(_pose({4: (0.5, 20)}), 64, 48)[20, 0].tolist() == [170, 255, 0]


def test_styles_layer_people_differently():
    """Person 1's limb crosses person 0's joint: DWPose draws all joints after all limbs,
    comfyui_controlnet_aux finishes person 0 before drawing person 1."""
    kps = np.concatenate([_pose({1: (30, 30), 2: (60, 30)}), _pose({8: (45, 10), 9: (45, 50)})])
    assert draw.draw_pose(kps, 80, 60)[30, 60].tolist() == [255, 170, 0]
    assert draw.draw_pose(kps, 80, 60, style="controlnet_aux")[30, 45].tolist() == [0, 153, 51]
    assert draw.draw_pose(kps, 80, 60, style="dwpose")[30, 45].tolist() == [0, 153, 51]
    kps[1] = _pose({8: (60, 10), 9: (60, 50)})[0]
    assert draw.draw_pose(kps, 80, 60, style="dwpose")[30, 60].tolist() == [255, 170, 0]
    assert draw.draw_pose(kps, 80, 60, style="controlnet_aux")[30, 60].tolist() == [0, 153, 51]


def test_draw_frames_scales_to_any_size(cases):
    kps, width, height = cases["crowd"]
    frames = kp.dense_to_pose_keypoint(kps[None], width, height)
    big = draw.draw_frames(frames, width=2 * width, height=2 * height)
    assert big.shape == (1, 2 * height, 2 * width, 3)
    expected = kp.pose_keypoint_to_dense(frames).keypoints[0].astype(np.float64)
    expected[..., :2] *= 2
    np.testing.assert_array_equal(np.rint(big[0] * 255), draw.draw_pose(expected, 2 * width, 2 * height))
    one = draw.draw_frames(frames)
    assert one.shape == (1, height, width, 3) and 0 <= one.min() and one.max() <= 1
    # Line widths stay in pixels: a lone joint is the same 9-pixel disc at any size.
    lone = kp.dense_to_pose_keypoint(_pose({4: (30, 20)})[None], 64, 48)
    assert (draw.draw_frames(lone, width=256, height=192)[0].any(axis=2)).sum() == 49


def test_draw_frames_checks_sizes_and_inputs():
    a = kp.dense_to_pose_keypoint(_pose({4: (30, 20)})[None], 64, 48)
    b = kp.dense_to_pose_keypoint(_pose({4: (30, 20)})[None], 32, 32)
    with pytest.raises(ValueError, match=r"different canvas sizes \[\(32, 32\), \(64, 48\)\]; pass width and height"):
        draw.draw_frames(a + b)
    assert draw.draw_frames(a + b, width=16, height=16).shape == (2, 16, 16, 3)
    dense = kp.pose_keypoint_to_dense(a)
    np.testing.assert_array_equal(draw.draw_frames(dense), draw.draw_frames(a))  # PoseArrays accepted
    with pytest.raises(ValueError, match=r"shape \[people, 134, 3\], got \[2, 133, 3\]"):
        draw.draw_pose(np.zeros((2, 133, 3)), 8, 8)
    with pytest.raises(ValueError, match="style must be one of"):
        draw.draw_pose(np.zeros((1, 134, 3)), 8, 8, style="openpose")
    with pytest.raises(ValueError, match="canvas size must be positive"):
        draw.draw_pose(np.zeros((1, 134, 3)), 0, 8)


def test_non_finite_and_far_away_points_are_harmless():
    kps = _pose({1: (20, 20), 2: (1e9, -1e9), 3: (np.nan, 5), 92: (30, 30), 93: (1e7, 30)})
    image = draw.draw_pose(kps, 64, 48)
    assert image[20, 20].tolist() == [255, 85, 0] and image[30, 30].tolist() == [0, 0, 255]


def test_rasteriser_matches_opencv():
    """The numpy re-implementations against OpenCV itself (a test-only dependency) on random
    shapes, many of them crossing the image border."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)

    def mask(pixels, width, height):
        out = np.zeros(width * height, np.uint8)
        out[pixels] = 1
        return out.reshape(height, width)

    for _ in range(150):
        width, height = (int(v) for v in rng.integers(10, 160, 2))
        ends = rng.uniform(-40, [width + 40, height + 40, width + 40, height + 40], (4, 4)).T
        ends[:, :2] = np.round(ends[:, :2]) if rng.random() < 0.3 else ends[:, :2]
        pixels, owner = draw._limbs(*ends, width, height)
        for i, (ax, ay, bx, by) in enumerate(ends.T):
            length = ((ay - by) ** 2 + (ax - bx) ** 2) ** 0.5
            angle = int(np.degrees(np.arctan2(ay - by, ax - bx)))
            poly = cv2.ellipse2Poly((int((ax + bx) / 2), int((ay + by) / 2)), (int(length / 2), 4), angle, 0, 360, 1)
            expected = cv2.fillConvexPoly(np.zeros((height, width), np.uint8), poly, 1)
            np.testing.assert_array_equal(mask(pixels[owner == i], width, height), expected)
        points = rng.integers(-25, [width + 25, height + 25, width + 25, height + 25], (6, 4)).T
        points[2:, :3] = points[:2, :3] + rng.integers(-6, 7, (2, 3))  # short ones too
        pixels, owner = draw._thick_lines(*points, width, height)
        for i, (x1, y1, x2, y2) in enumerate(points.T.tolist()):
            expected = cv2.line(np.zeros((height, width), np.uint8), (x1, y1), (x2, y2), 1, thickness=2)
            np.testing.assert_array_equal(mask(pixels[owner == i], width, height), expected)
        for radius in (3, 4):
            pixels, owner = draw._discs(points[0], points[1], radius, width, height)
            for i, (x, y) in enumerate(points[:2].T.tolist()):
                expected = cv2.circle(np.zeros((height, width), np.uint8), (x, y), radius, 1, thickness=-1)
                np.testing.assert_array_equal(mask(pixels[owner == i], width, height), expected)
