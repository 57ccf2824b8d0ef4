"""DWPose geometry: frame conversion and checks, letterbox, crop matrices, and our numpy
resize / warp against OpenCV (a test-only dependency)."""
import cv2
import numpy as np
import pytest
import torch

from marionette.nodes.pose import dwpose


def _smooth(h, w, seed=0):
    small = np.random.default_rng(seed).integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _cv2_warp_is_exact() -> bool:
    """Current OpenCV samples at exact positions; older builds rounded them to 1/32 pixel."""
    img = np.array([[[0], [255]]], np.uint8).repeat(2, 0)
    m = np.array([[1, 0, -0.01], [0, 1, 0]], np.float64)  # output x=0 samples input x=0.01
    return int(cv2.warpAffine(img, m, (1, 1), flags=cv2.INTER_LINEAR)[0, 0]) == 3


# ------------------------------------------------------------------------------------ frames

def test_frame_to_bgr_swaps_channels_and_recovers_uint8_values():
    rgb = np.zeros((4, 5, 3), np.float32)
    rgb[..., 0] = 200 / 255  # red
    rgb[..., 2] = np.float32(37) / np.float32(255)  # blue
    bgr = dwpose.frame_to_bgr(rgb)
    assert bgr.dtype == np.uint8 and bgr.shape == (4, 5, 3)
    np.testing.assert_array_equal(bgr[0, 0], [37, 0, 200])
    np.testing.assert_array_equal(dwpose.frame_to_bgr(torch.from_numpy(rgb)), bgr)
    np.testing.assert_array_equal(dwpose.frame_to_bgr((rgb * 255).round().astype(np.uint8)), bgr)
    assert dwpose.frame_to_bgr(np.full((2, 2, 3), 1.2, np.float32)).max() == 255  # small overshoot clipped


def test_frame_to_bgr_rejects_0_255_floats():
    with pytest.raises(ValueError, match="0..1"):
        dwpose.frame_to_bgr(np.full((4, 4, 3), 128.0, np.float32))


@pytest.mark.parametrize("shape,match", [
    ((0, 64, 64, 3), "empty batch"),
    ((2, 64, 64, 4), "4 channels.*alpha"),
    ((2, 64, 64, 1), "1 channels"),
    ((2, 16, 64, 3), "at least 32"),
    ((64, 64), "shape"),
    ((1, 2, 64, 64, 3), "shape"),
])
def test_check_frames_rejects_bad_input_with_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        dwpose.check_frames(np.zeros(shape, np.float32))


def test_check_frames_accepts_batches_single_frames_and_tensors():
    assert dwpose.check_frames(np.zeros((3, 40, 50, 3))) == (3, 40, 50)
    assert dwpose.check_frames(np.zeros((40, 50, 3))) == (1, 40, 50)
    assert dwpose.check_frames(torch.zeros(2, 64, 32, 3)) == (2, 64, 32)
    with pytest.raises(ValueError, match="IMAGE batch"):
        dwpose.check_frames([[1, 2, 3]])


# ------------------------------------------------------------------------- resize / letterbox

@pytest.mark.parametrize("src,dst", [((100, 200), (320, 640)), ((1080, 1920), (360, 640)), ((97, 211), (294, 640)),
                                     ((512, 512), (640, 640)), ((301, 157), (100, 52)), ((64, 64), (32, 32))])
def test_resize_matches_cv2_inter_linear(src, dst):
    for img in (_smooth(*src), _noise(*src)):
        ref = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
        out = dwpose.resize_bilinear(img.astype(np.float32), dst[1], dst[0])
        assert out.shape == ref.shape
        diff = np.abs(out - ref)
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_letterbox_scales_top_left_and_pads_114():
    img = _smooth(100, 200).astype(np.float32)
    chw, r = dwpose.letterbox(img, (640, 640), 114)
    assert r == pytest.approx(3.2) and chw.shape == (3, 640, 640) and chw.dtype == np.float32
    np.testing.assert_array_equal(chw[:, 320:], 114)  # 100 × 3.2 = 320 rows of picture, the rest padding
    ref = cv2.resize(img.astype(np.uint8), (640, 320), interpolation=cv2.INTER_LINEAR)
    assert np.abs(chw[:, :320].transpose(1, 2, 0) - ref).max() <= 1  # channel order kept (BGR in, BGR out)


def test_letterbox_maps_a_point_by_the_ratio():
    img = np.zeros((300, 500, 3), np.float32)
    img[100:110, 200:210] = 255  # a 10×10 white square at (200, 100)
    chw, r = dwpose.letterbox(img, (640, 640), 114)
    assert r == pytest.approx(640 / 500)
    ys, xs = np.nonzero(chw[0] > 128)
    # forward: the square's centre (205, 105) lands at (205 r, 105 r); back: divided by r
    assert np.mean(xs) + 0.5 == pytest.approx(205 * r, abs=0.5)
    assert (np.mean(ys) + 0.5) / r == pytest.approx(105, abs=0.5)
    assert int(300 * r) == 384 and (chw[:, 384:] == 114).all() and (chw[:, 383] != 114).any()


# ----------------------------------------------------------------------------- crop and warp

def test_box_centre_scale_and_aspect():
    c, s = dwpose.bbox_xyxy_to_cs(np.array([[100, 50, 300, 450]]), 1.25)
    np.testing.assert_allclose(c, [[200, 250]])
    np.testing.assert_allclose(s, [[250, 500]])
    np.testing.assert_allclose(dwpose.fix_aspect_ratio(np.array([[100.0, 400.0], [400.0, 100.0]]), 0.75),
                               [[300, 400], [400, 400 / 0.75]])


@pytest.mark.parametrize("rot", [0.0, 30.0, -90.0])
def test_warp_matrix_matches_mmpose_three_point_construction(rot):
    centre, scale, out = np.array([210.5, 160.25]), np.array([375.0, 500.0]), (288, 384)
    a = np.deg2rad(rot)
    up = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([0, -scale[0] / 2])

    def rot90(d):
        return np.array([-d[1], d[0]])

    src = np.float32([centre, centre + up, centre + up + rot90(-up)])
    dst_c, dst_up = np.array([144.0, 192.0]), np.array([0.0, -144.0])
    dst = np.float32([dst_c, dst_c + dst_up, dst_c + dst_up + rot90(-dst_up)])
    np.testing.assert_allclose(dwpose.get_warp_matrix(centre, scale, rot, out), cv2.getAffineTransform(src, dst),
                               atol=1e-3)
    m = np.vstack([dwpose.get_warp_matrix(centre, scale, rot, out), [0, 0, 1]])
    m_inv = np.vstack([dwpose.get_warp_matrix(centre, scale, rot, out, inv=True), [0, 0, 1]])
    np.testing.assert_allclose(m @ m_inv, np.eye(3), atol=1e-9)


def test_crop_maps_box_centre_to_crop_centre_and_back():
    c, s = np.array([200.0, 250.0]), np.array([375.0, 500.0])
    m = dwpose.get_warp_matrix(c, s, 0.0, (288, 384))
    np.testing.assert_allclose(m @ [200, 250, 1], [144, 192])
    np.testing.assert_allclose(m @ [200 - 187.5, 0, 1], [0, 0], atol=1e-9)  # crop corner
    # the estimator's back-mapping (loc / size · scale + centre − scale / 2) is the inverse warp
    p = np.array([37.0, 301.0])
    back = p / [288, 384] * s + c - s / 2
    np.testing.assert_allclose(m @ [*back, 1], p, atol=1e-9)


@pytest.mark.parametrize("box", [[10.3, 20.7, 300.0, 450.0], [-30, -10, 540, 505], [200, 200, 225, 250]])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_warp_matches_cv2_warp_affine(box, kind):
    img = (_smooth if kind == "smooth" else _noise)(480, 512, seed=3)
    c, s = dwpose.bbox_xyxy_to_cs(np.array([box]), 1.25)
    s = dwpose.fix_aspect_ratio(s, 288 / 384)
    m = dwpose.get_warp_matrix(c[0], s[0], 0.0, (288, 384))
    ref = cv2.warpAffine(img, m, (288, 384), flags=cv2.INTER_LINEAR).astype(np.float32)  # border 0
    out = dwpose.warp_affine_bilinear(img.astype(np.float32), m, 288, 384)
    diff = np.abs(out - ref)
    if _cv2_warp_is_exact():
        assert diff.max() <= 1 and diff.mean() < 0.01
    else:  # older OpenCV rounds sampling positions to 1/32 pixel
        assert diff.mean() < (0.2 if kind == "smooth" else 1.5)
    if box[0] < 0:  # outside the frame is black
        assert (out[:, 0] == 0).all() and (ref[:, 0] == 0).all()


def test_rotated_warp_matches_cv2():
    img = _smooth(200, 300, seed=5)
    m = dwpose.get_warp_matrix(np.array([150.0, 100.0]), np.array([120.0, 160.0]), 25.0, (96, 128))
    ref = cv2.warpAffine(img, m, (96, 128), flags=cv2.INTER_LINEAR).astype(np.float32)
    diff = np.abs(dwpose.warp_affine_bilinear(img.astype(np.float32), m, 96, 128) - ref)
    assert diff.mean() < (0.01 if _cv2_warp_is_exact() else 0.2)


def test_pose_inputs_are_normalised_bgr_crops():
    img = np.zeros((400, 300, 3), np.float32)
    img[..., 0] = 255  # blue everywhere (BGR)
    crops, centres, scales = dwpose.pose_inputs(img, np.array([[50, 50, 250, 350]]), (288, 384), dwpose.DWPoseConfig())
    assert crops.shape == (1, 3, 384, 288) and crops.dtype == np.float32
    np.testing.assert_allclose(crops[0, :, 192, 144], [(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375],
                               rtol=1e-5)
    np.testing.assert_allclose(scales, [[281.25, 375]])  # 200×300 · 1.25 = 250×375, widened to 3:4
    np.testing.assert_allclose(centres, [[150, 200]])
