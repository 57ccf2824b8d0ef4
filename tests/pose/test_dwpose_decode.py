"""DWPose decoding: SimCC → keypoints, the 133 → 134 reorder, YOLOX grid decode and NMS, all on
constructed model outputs with known answers."""
import numpy as np
import pytest

from marionette.nodes.pose import dwpose

# DWPose-134 index → COCO-WholeBody index (spec §9.3; -1 = the neck, mean of the shoulders).
# COCO body: 0 nose, 1 L-eye, 2 R-eye, 3 L-ear, 4 R-ear, 5 L-shoulder, 6 R-shoulder, 7 L-elbow,
# 8 R-elbow, 9 L-wrist, 10 R-wrist, 11 L-hip, 12 R-hip, 13 L-knee, 14 R-knee, 15 L-ankle, 16 R-ankle.
OPENPOSE_FROM_COCO = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
EXPECTED_SOURCE = OPENPOSE_FROM_COCO + list(range(17, 133))


def _coco_points(n=1):
    """Distinct, recognisable coordinates: x = 10·index + person, y = 1000 + index."""
    idx = np.arange(133, dtype=np.float32)
    kp = np.stack([10 * idx, 1000 + idx], -1)[None].repeat(n, 0)
    kp[:, :, 0] += np.arange(n)[:, None]
    scores = np.full((n, 133), 0.9, np.float32)
    return kp, scores


def test_simcc_peaks_decode_to_bins_over_split_ratio():
    rng = np.random.default_rng(0)
    bins = np.stack([rng.integers(0, 576, 133), rng.integers(0, 768, 133)], -1)
    hx, hy = rng.uniform(0.4, 1.0, 133), rng.uniform(0.4, 1.0, 133)
    sx = rng.uniform(-0.1, 0.3, (2, 133, 576)).astype(np.float32)
    sy = rng.uniform(-0.1, 0.3, (2, 133, 768)).astype(np.float32)
    sx[:, np.arange(133), bins[:, 0]] = hx
    sy[:, np.arange(133), bins[:, 1]] = hy
    locs, scores = dwpose.decode_simcc(sx, sy, 2.0)
    assert locs.shape == (2, 133, 2) and scores.shape == (2, 133)
    np.testing.assert_array_equal(locs[0], bins / 2.0)
    np.testing.assert_allclose(scores[1], np.minimum(hx, hy), rtol=1e-6)


def test_simcc_nonpositive_score_moves_location_to_minus_one_before_split():
    sx = np.full((1, 3, 576), -0.2, np.float32)
    sy = np.full((1, 3, 768), -0.2, np.float32)
    sx[0, 0, 100], sy[0, 0, 200] = 0.8, 0.5  # visible
    sx[0, 1, 50], sy[0, 1, 60] = 0.9, 0.0  # y maximum exactly 0 → invisible
    sx[0, 2, 10] = 0.7  # y maximum −0.2 → invisible
    locs, scores = dwpose.decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(scores[0], [0.5, 0.0, -0.2], atol=1e-7)
    np.testing.assert_array_equal(locs[0, 0], [50.0, 100.0])
    np.testing.assert_array_equal(locs[0, 1:], -0.5)  # −1 set before dividing by the split ratio


def test_reorder_to_dwpose134_matches_openpose_layout():
    kp, scores = _coco_points(2)
    out = dwpose.to_dwpose134(kp, scores)
    assert out.shape == (2, 134, 3) and out.dtype == np.float32
    for i, src in enumerate(EXPECTED_SOURCE):
        if src == -1:
            np.testing.assert_allclose(out[:, i, :2], (kp[:, 5] + kp[:, 6]) / 2)
            np.testing.assert_array_equal(out[:, i, 2], 1.0)
        else:
            np.testing.assert_array_equal(out[:, i, :2], kp[:, src], err_msg=f"DWPose point {i}")
    # spot checks by name: right shoulder, left eye, first left-hand point (wrist)
    assert out[0, 2, 0] == 60 and out[0, 15, 0] == 10 and out[1, 92, 0] == 911


@pytest.mark.parametrize("left,right,expected", [(0.9, 0.9, 1.0), (0.3, 0.9, 0.0), (0.9, 0.1, 0.0), (0.31, 0.31, 1.0)])
def test_neck_score_is_one_only_when_both_shoulders_above_threshold(left, right, expected):
    kp, scores = _coco_points()
    scores[0, 5], scores[0, 6] = left, right
    out = dwpose.to_dwpose134(kp, scores, threshold=0.3)
    assert out[0, 1, 2] == expected
    assert out[0, 5, 2] == pytest.approx(left) and out[0, 2, 2] == pytest.approx(right)


def test_to_dwpose134_rejects_other_keypoint_counts():
    with pytest.raises(ValueError, match="133"):
        dwpose.to_dwpose134(np.zeros((1, 17, 2)), np.zeros((1, 17)))


def test_body_keypoint_count_ignores_the_neck():
    kp = np.zeros((1, 134, 3), np.float32)
    kp[0, [0, 1, 2, 5], 2] = 0.9  # nose, neck, both shoulders
    kp[0, 20, 2] = 0.9  # a foot point is not body
    assert dwpose.body_keypoint_counts(kp).tolist() == [3]


# ------------------------------------------------------------------------------ YOLOX decode

def _anchor(stride, x, y):
    offset = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return offset + y * (640 // stride) + x


def _raw(entries):
    """[8400, 85] raw output, all-zero scores except ``entries``: (stride, x, y, dx, dy, logw, logh, obj, cls, p)."""
    raw = np.zeros((8400, 85), np.float32)
    for stride, x, y, dx, dy, lw, lh, obj, cls, p in entries:
        a = _anchor(stride, x, y)
        raw[a, :5] = dx, dy, lw, lh, obj
        raw[a, 5 + cls] = p
    return raw


def test_yolox_grid_decode_positions_sizes_and_scores():
    raw = _raw([(8, 3, 2, 0.5, 0.25, np.log(4), np.log(8), 0.9, 0, 0.8),
                (16, 39, 1, 0.0, 0.5, 0.0, np.log(2), 0.5, 3, 1.0),
                (32, 7, 19, 0.5, 0.5, np.log(10), np.log(20), 1.0, 0, 0.4)])
    boxes, scores = dwpose.decode_yolox(raw)
    assert boxes.shape == (8400, 4) and scores.shape == (8400, 80)
    np.testing.assert_allclose(boxes[_anchor(8, 3, 2)], [28, 18, 32, 64], rtol=1e-6)
    np.testing.assert_allclose(boxes[_anchor(16, 39, 1)], [624, 24, 16, 32], rtol=1e-6)
    np.testing.assert_allclose(boxes[_anchor(32, 7, 19)], [240, 624, 320, 640], rtol=1e-5)
    assert scores[_anchor(8, 3, 2), 0] == pytest.approx(0.72)
    assert scores[_anchor(16, 39, 1), 3] == pytest.approx(0.5)
    assert scores[_anchor(8, 3, 2), 1] == 0.0


def test_yolox_decode_rejects_wrong_row_count():
    with pytest.raises(ValueError, match="8400"):
        dwpose.decode_yolox(np.zeros((100, 85), np.float32))


def test_nms_uses_the_official_plus_one_area_convention():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float32)
    # IoU with +1 areas: 50 / 150 = 0.333; without: 36 / 126 = 0.286
    assert dwpose.nms(boxes, np.array([0.9, 0.8]), 0.3) == [0]
    assert dwpose.nms(boxes, np.array([0.9, 0.8]), 0.34) == [0, 1]
    assert dwpose.nms(boxes, np.array([0.5, 0.8]), 0.3) == [1]  # highest score first


def test_multiclass_nms_is_class_wise():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.05, 0.7]], np.float32)
    dets = dwpose.multiclass_nms(boxes, scores, 0.45, 0.1)
    assert dets.shape == (3, 6)
    assert dets[:, 5].tolist() == [0, 1, 1]  # the same box kept once per class; 0.05 below threshold
    assert dets[1:, 4].tolist() == pytest.approx([0.8, 0.7])
    assert dwpose.multiclass_nms(boxes, scores, 0.45, 0.95).shape == (0, 6)


def test_person_detections_from_raw_output():
    cfg = dwpose.DWPoseConfig()
    raw = _raw([
        (32, 5, 5, 0.5, 0.5, np.log(5), np.log(10), 0.95, 0, 0.95),  # person, 160×320 at (176, 176)
        (32, 5, 6, 0.5, 0.2, np.log(5), np.log(10), 0.9, 0, 0.9),  # same person one cell lower: suppressed
        (16, 30, 30, 0.5, 0.5, np.log(4), np.log(8), 0.5, 0, 0.5),  # weak person 0.25: below 0.3
        (16, 10, 30, 0.5, 0.5, np.log(4), np.log(8), 0.99, 2, 0.99),  # a car: not a person
        (8, 70, 10, 0.5, 0.5, np.log(4), np.log(8), 0.7, 0, 0.6),  # small second person 0.42
    ])
    boxes, scores = dwpose.detections_from_raw(raw, ratio=0.5, config=cfg)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    np.testing.assert_allclose(scores, [0.95 * 0.95, 0.42], rtol=1e-6)
    # divided by the letterbox ratio 0.5
    np.testing.assert_allclose(boxes[0], [2 * (176 - 80), 2 * (176 - 160), 2 * (176 + 80), 2 * (176 + 160)], rtol=1e-5)
    np.testing.assert_allclose(boxes[1], [2 * (564 - 16), 2 * (84 - 32), 2 * (564 + 16), 2 * (84 + 32)], rtol=1e-5)
    none, none_scores = dwpose.detections_from_raw(np.zeros((8400, 85), np.float32), 1.0, cfg)
    assert none.shape == (0, 4) and none_scores.shape == (0,)


# ---------------------------------------------------------------- full estimate on fake models

@pytest.mark.parametrize("names,swap", [(("simcc_x", "simcc_y"), False), (("simcc_x", "simcc_y"), True),
                                        (("out_a", "out_b"), False), (("out_a", "out_b"), True)])
def test_estimate_maps_simcc_peaks_to_image_pixels(fakes, names, swap):
    bins = np.zeros((133, 2), np.int64)
    bins[:, 0], bins[:, 1] = 288, 384  # crop centre (144, 192) at split ratio 2
    bins[0] = (0, 0)  # nose at the crop's top-left corner
    bins[5] = (576 - 2, 768 - 2)  # left shoulder at crop (287, 383)
    heights = np.full(133, 0.8)
    heights[9] = -0.1  # left wrist invisible
    est = dwpose.DWPoseEstimator(fakes.detector(), fakes.pose(bins, heights, names, swap=swap))
    box = np.array([[100, 50, 300, 450]], np.float32)  # w 200, h 400 → ×1.25 → (250, 500) → aspect (375, 500)
    kp = est.estimate(np.zeros((600, 500, 3), np.float32), box)
    assert kp.shape == (1, 134, 3)
    scale = np.array([375.0, 500.0])
    top_left = np.array([200.0, 250.0]) - scale / 2
    np.testing.assert_allclose(kp[0, 0, :2], top_left, atol=1e-4)  # nose
    np.testing.assert_allclose(kp[0, 8, :2], [200, 250], atol=1e-4)  # R-hip at the crop centre = box centre
    np.testing.assert_allclose(kp[0, 5, :2], top_left + np.array([287, 383]) / [288, 384] * scale, atol=1e-3)
    np.testing.assert_allclose(kp[0, 7, :2], top_left + (-0.5) / np.array([288, 384]) * scale, atol=1e-4)  # L-wrist
    assert kp[0, 7, 2] == pytest.approx(-0.1)
    np.testing.assert_allclose(kp[0, 1, :2], (kp[0, 2, :2] + kp[0, 5, :2]) / 2, atol=1e-4)  # neck


def test_estimate_without_boxes_uses_the_whole_frame(fakes):
    bins = np.full((133, 2), 0, np.int64)
    est = dwpose.DWPoseEstimator(fakes.detector(), fakes.pose(bins, np.full(133, 0.9)))
    kp = est.estimate(np.zeros((300, 600, 3), np.float32), np.zeros((0, 4)))
    # whole frame box 600×300 → ×1.25 = 750×375 → aspect 0.75 → 750×1000 around (300, 150)
    np.testing.assert_allclose(kp[0, 0, :2], [300 - 375, 150 - 500], atol=1e-4)


def test_static_batch_loops_and_dynamic_batch_runs_once(fakes):
    bins = np.full((133, 2), 100, np.int64)
    boxes = np.array([[0, 0, 50, 100], [60, 0, 120, 100], [10, 10, 90, 90]], np.float32)
    frame = np.zeros((128, 128, 3), np.float32)
    static = fakes.pose(bins, np.full(133, 0.9), batch=1)
    dynamic = fakes.pose(bins, np.full(133, 0.9), batch="batch")
    a = dwpose.DWPoseEstimator(fakes.detector(), static).estimate(frame, boxes)
    b = dwpose.DWPoseEstimator(fakes.detector(), dynamic).estimate(frame, boxes)
    assert static.calls == [1, 1, 1] and dynamic.calls == [3]
    np.testing.assert_allclose(a, b)


def test_unnamed_dynamic_simcc_outputs_are_told_apart_by_size(fakes):
    bins = np.zeros((133, 2), np.int64)
    bins[:, 0], bins[:, 1] = 100, 600  # x and y peaks far apart: a swap would show
    sx, sy = fakes.simcc(bins, np.full(133, 0.9))
    pose = fakes.Session(lambda b: [sy, sx], "input", ("N", 3, 384, 288),
                         [("output_0", ("N", 133, "bins_a")), ("output_1", ("N", 133, "bins_b"))])
    est = dwpose.DWPoseEstimator(fakes.detector(), pose)
    assert est._simcc_names is None
    kp = est.estimate(np.zeros((384, 288, 3), np.uint8), np.array([[0, 0, 288, 384]]))
    # box 288×384 → scale 360×480 around (144, 192): crop pixel (50, 300) → image
    np.testing.assert_allclose(kp[0, 0, :2], np.array([50, 300]) / [288, 384] * [360, 480] + [144, 192] - [180, 240],
                               atol=1e-4)
