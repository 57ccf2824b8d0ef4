"""The moving background plate (nodes/track/plate.py): the person is inpainted away smoothly,
the plate moves exactly like the camera, pixels from outside the reference are marked, and the
node refuses bad input with messages that say what to connect."""
import numpy as np
import pytest
import torch

from marionette.nodes.track import camera, camera_node, plate
from marionette.nodes.types import CameraMotion

W, H = 96, 72


def texture(x, y):
    """A smooth analytic background, so a warped plate can be compared with the exact answer."""
    r = 0.5 + 0.25 * np.sin(x / 9.0) * np.cos(y / 11.0)
    g = 0.5 + 0.2 * np.cos((x + 2 * y) / 13.0)
    b = 0.4 + 0.002 * x + 0.001 * y
    return np.stack([r, g, b], -1)


def pixel_grid(w, h):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs, ys


def motion_of(Hs, w=W, h=H):
    T = len(Hs)
    return CameraMotion(homographies=np.asarray(Hs, np.float64), models=("homography",) * T,
                        inliers=np.full(T, 50), residual=np.zeros(T), width=w, height=h)


def pan_zoom(T, pan=(6.0, -3.0), zoom=0.03, w=W, h=H):
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    out = []
    for t in range(T):
        s = 1 + zoom * t
        A = np.diag([s, s, 1.0])
        A[:2, 2] = c - s * c + np.asarray(pan) * t
        A[2, 0] = 1e-4 * t
        out.append(A)
    return camera.compose(np.stack(out), camera.invert(out[0]))


def disc(cx, cy, r, w=W, h=H):
    xs, ys = pixel_grid(w, h)
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def test_dilate_grows_by_the_radius():
    m = torch.zeros(41, 41, dtype=torch.bool)
    m[20, 20] = True
    d = plate.dilate(m, 6)
    assert bool(d[20, 14]) and bool(d[20, 26]) and bool(d[14, 20]) and not bool(d[20, 13])
    assert not bool(d[14, 14])  # rounder than a square: the corner is cut
    assert torch.equal(plate.dilate(m, 0), m)


def test_inpaint_removes_the_person_and_is_smooth():
    xs, ys = pixel_grid(W, H)
    # A linear ramp is harmonic, so a membrane fill must reproduce it inside the hole.
    bg = np.stack([0.2 + 0.004 * xs, 0.3 + 0.005 * ys, 0.6 - 0.002 * xs - 0.001 * ys], -1)
    person = disc(48, 36, 16)
    img = bg.copy()
    img[person] = [0.95, 0.05, 0.1]  # a red person
    hole = torch.from_numpy(plate.dilate(torch.from_numpy(person), 2).numpy())
    out = plate.inpaint(torch.from_numpy(img).float(), hole).double().numpy()
    h = hole.numpy()
    assert np.array_equal(out[~h], img[~h].astype(np.float32).astype(np.float64))  # known pixels untouched
    assert np.abs(out[h] - bg[h]).max() < 0.02  # the ramp continues through the hole
    assert out[h][:, 0].max() < 0.6  # no trace of the person's red
    lap = np.abs(out[:-2, 1:-1] + out[2:, 1:-1] + out[1:-1, :-2] + out[1:-1, 2:] - 4 * out[1:-1, 1:-1])
    assert lap[h[1:-1, 1:-1]].max() < 0.01  # smooth: no blocks or seams inside the fill


def test_inpaint_on_texture_takes_the_surrounding_colours():
    xs, ys = pixel_grid(W, H)
    bg = texture(xs, ys)
    person = disc(40, 30, 12)
    img = bg.copy()
    img[person] = [1.0, 0.0, 1.0]
    out = plate.inpaint(torch.from_numpy(img).float(), torch.from_numpy(person)).double().numpy()
    err_fill = np.abs(out[person] - bg[person]).mean()
    err_person = np.abs(img[person] - bg[person]).mean()
    assert err_fill < 0.1 and err_fill < 0.2 * err_person
    assert (out[person].min(0) >= bg.min((0, 1)) - 1e-3).all() and (out[person].max(0) <= bg.max((0, 1)) + 1e-3).all()


def test_plate_moves_exactly_like_the_camera():
    T = 6
    Hs = pan_zoom(T)
    xs, ys = pixel_grid(W, H)
    ref = torch.from_numpy(texture(xs, ys)).float()
    mask = torch.from_numpy(disc(8, 8, 3)).float()  # a small person in a corner
    calls = []
    bp = plate.make_background_plate(ref, mask, motion_of(Hs), dilation_px=1,
                                     progress=lambda d, t: calls.append((d, t)))
    assert bp.frames.shape == (T, H, W, 3) and bp.valid.shape == (T, H, W) and calls[-1] == (T, T)
    for t in range(T):
        src = camera.apply_homography(camera.invert(Hs[t]), np.stack([xs, ys], -1).reshape(-1, 2))
        want = texture(src[:, 0], src[:, 1]).reshape(H, W, 3)
        hole_t = camera.apply_homography(Hs[t], np.array([[8.0, 8.0]]))[0]
        far = (xs - hole_t[0]) ** 2 + (ys - hole_t[1]) ** 2 > 8 ** 2
        # Sources between the last pixel centre and the image edge (-0.5..0) are valid but padded.
        inner = ((src[:, 0] >= 0) & (src[:, 0] <= W - 1) & (src[:, 1] >= 0) & (src[:, 1] <= H - 1)).reshape(H, W)
        assert (bp.valid[t].numpy()[inner] == 1).all()
        keep = inner & far
        assert keep.mean() > 0.5
        assert np.abs(bp.frames[t].numpy() - want)[keep].max() < 0.01


def test_plate_at_another_size_follows_the_same_motion():
    T = 4
    Hs = pan_zoom(T)
    xs, ys = pixel_grid(W, H)
    ref = torch.from_numpy(texture(xs, ys)).float()
    mask = torch.from_numpy(disc(8, 8, 3)).float()
    W2, H2 = 2 * W, 2 * H
    bp = plate.make_background_plate(ref, mask, motion_of(Hs), dilation_px=1, width=W2, height=H2)
    assert bp.frames.shape == (T, H2, W2, 3)
    S = camera.scale_matrix((W, H), (W2, H2))
    X2, Y2 = pixel_grid(W2, H2)
    t = T - 1
    # A big-plate pixel q shows the reference pixel H⁻¹ S⁻¹ q (the motion acts in reference pixels).
    src = camera.apply_homography(camera.compose(camera.invert(Hs[t]), np.linalg.inv(S)),
                                  np.stack([X2, Y2], -1).reshape(-1, 2))
    want = texture(src[:, 0], src[:, 1]).reshape(H2, W2, 3)
    inner = ((src[:, 0] >= 0) & (src[:, 0] <= W - 1) & (src[:, 1] >= 0) & (src[:, 1] <= H - 1)).reshape(H2, W2)
    keep = inner & ((X2 > 40) | (Y2 > 40))
    assert np.abs(bp.frames[t].numpy() - want)[keep].max() < 0.015


def test_validity_mask_and_padding():
    shift = np.array([[1, 0, 10.0], [0, 1, 0], [0, 0, 1]])  # the scene moves 10 px right
    Hs = np.stack([np.eye(3), shift])
    xs, ys = pixel_grid(W, H)
    ref = torch.from_numpy(texture(xs, ys)).float()
    mask = torch.from_numpy(disc(60, 40, 4)).float()
    for padding in plate.PADDING:
        bp = plate.make_background_plate(ref, mask, motion_of(Hs), dilation_px=0, padding=padding)
        assert bp.valid[0].min() == 1  # frame 0 is the reference itself
        v = bp.valid[1].numpy()
        # Columns 0..9 come from x = -10..-1 (outside); column 10 is the reference's column 0.
        assert (v[:, :10] == 0).all() and (v[:, 10:] == 1).all()
        f = bp.frames[1].numpy()
        assert np.allclose(f[:, 10:], bp.background.numpy()[:, :-10], atol=1e-5)
        if padding == "border":
            assert np.allclose(f[:, 3], bp.background.numpy()[:, 0], atol=1e-5)
        else:  # mirrored about the reference's left edge: column 10 - k shows column k - 1
            assert np.allclose(f[:, 7], bp.background.numpy()[:, 2], atol=1e-5)


def test_checks_name_the_fix():
    xs, ys = pixel_grid(W, H)
    ref = torch.from_numpy(texture(xs, ys)).float()
    good = torch.from_numpy(disc(40, 30, 10)).float()
    motion = motion_of(pan_zoom(3))
    with pytest.raises(ValueError, match="mask is empty"):
        plate.make_background_plate(ref, torch.zeros(H, W), motion)
    with pytest.raises(ValueError, match="covers the whole image"):
        plate.make_background_plate(ref, torch.ones(H, W), motion)
    with pytest.raises(ValueError, match="lower dilation_px"):
        plate.make_background_plate(ref, good, motion, dilation_px=120)
    with pytest.raises(ValueError, match="same image"):
        plate.make_background_plate(ref, torch.ones(H + 1, W), motion)
    with pytest.raises(ValueError, match="aspect ratio"):
        plate.make_background_plate(ref, good, motion_of(pan_zoom(3), w=W, h=W))
    with pytest.raises(ValueError, match="padding"):
        plate.make_background_plate(ref, good, motion, padding="wrap")


def test_node_outputs_and_errors():
    xs, ys = pixel_grid(W, H)
    ref = torch.from_numpy(texture(xs, ys)).float()[None]
    mask = torch.from_numpy(disc(40, 30, 10)).float()[None]
    motion = camera.rescale_motion(motion_of(pan_zoom(5)), 2 * W, 2 * H)  # the video may be bigger
    node = camera_node.MarionetteMakeBackgroundPlate
    res = node.execute(reference_image=ref, reference_mask=mask, camera_motion=motion, dilation_px=4, width=48,
                       height=40, padding="reflection")
    frames, valid = res.args
    assert frames.shape == (5, 40, 48, 3) and valid.shape == (5, 40, 48)
    assert frames.dtype == torch.float32 and 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert float(valid[0].min()) == 1 and float(valid[-1].mean()) < 1  # the camera pans out of the reference
    assert "5 plate frames" in res.ui["text"][0]
    with pytest.raises(ValueError, match="holds 2 images"):
        node.execute(reference_image=ref.repeat(2, 1, 1, 1), reference_mask=mask, camera_motion=motion,
                     dilation_px=4, width=0, height=0, padding="reflection")
    with pytest.raises(ValueError, match="mask is empty"):
        node.execute(reference_image=ref, reference_mask=torch.zeros_like(mask), camera_motion=motion,
                     dilation_px=4, width=0, height=0, padding="reflection")
