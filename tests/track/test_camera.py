"""Camera motion from point tracks (nodes/track/camera.py): exact on clean data, robust to
outliers, sensible fallbacks, composition across tracks that start late, rescaling, and the
node's messages."""
import numpy as np
import pytest

from marionette.nodes.track import camera
from marionette.nodes.track import camera_node
from marionette.nodes.types import CameraMotion, PointTracks

W, H = 320, 240


def true_motion(T, pan=(1.5, -0.6), zoom=0.005, roll=0.002, persp=2e-5):
    """Frame 0 → t homographies: pan, zoom about the centre, roll and a little perspective."""
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    out = []
    for t in range(T):
        s, th = 1 + zoom * t, roll * t
        A = np.eye(3)
        A[:2, :2] = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        A[:2, 2] = c - A[:2, :2] @ c + np.asarray(pan) * t
        A[2, :2] = [persp * t, -0.5 * persp * t]
        out.append(A)
    return camera.compose(np.stack(out), camera.invert(out[0]))


def tracks_from(Ht, p0, noise=0.0, seed=0, visible=None, query=None):
    """Tracks of frame-0 points ``p0`` under ``Ht``; visible where inside the frame (and ``visible``)."""
    rng = np.random.default_rng(seed)
    T, N = len(Ht), len(p0)
    P = camera.apply_homography(Ht, np.broadcast_to(p0, (T, N, 2))) + rng.normal(0, noise, (T, N, 2))
    V = (P[..., 0] >= 0) & (P[..., 0] <= W - 1) & (P[..., 1] >= 0) & (P[..., 1] <= H - 1)
    if visible is not None:
        V &= visible
    q = np.zeros(N, np.int64) if query is None else query
    return PointTracks(tracks=P.astype(np.float32), visibility=V, query_frames=q, width=W, height=H)


def grid_error(Ha, Hb, n=9):
    xs, ys = np.meshgrid(np.linspace(0, W - 1, n), np.linspace(0, H - 1, n))
    g = np.stack([xs.ravel(), ys.ravel()], 1)
    T = len(Ha)
    a = camera.apply_homography(Ha, np.broadcast_to(g, (T,) + g.shape))
    b = camera.apply_homography(Hb, np.broadcast_to(g, (T,) + g.shape))
    return np.linalg.norm(a - b, axis=-1)


def random_points(n, seed=0, margin=40):
    return np.random.default_rng(seed).uniform([-margin, -margin], [W + margin, H + margin], (n, 2))


def test_exact_on_noiseless_homographies():
    Ht = true_motion(20)
    m = camera.estimate_camera_motion(tracks_from(Ht, random_points(150)))
    assert m.homographies.shape == (20, 3, 3) and np.allclose(m.homographies[0], np.eye(3))
    assert set(m.models) == {"homography"}
    assert grid_error(m.homographies, Ht).max() < 2e-3  # float32 tracks: ~1e-4 px rounding
    assert np.nanmax(m.residual) < 1e-3


def test_robust_to_30_percent_outliers():
    Ht = true_motion(16)
    tr = tracks_from(Ht, random_points(200), noise=0.3)
    rng = np.random.default_rng(1)
    bad = rng.random(200) < 0.3
    tr.tracks[:, bad] += rng.uniform(-60, 60, (16, bad.sum(), 2)).astype(np.float32)  # jump every frame
    m = camera.estimate_camera_motion(tr)
    assert set(m.models[1:]) == {"homography"}
    assert grid_error(m.homographies, Ht).mean() < 0.3
    good_visible = (tr.visibility[:, ~bad]).sum(1)
    assert (m.inliers[1:] <= good_visible[1:] + 2).all()  # outliers were not counted in
    assert (m.inliers[1:] >= 0.9 * good_visible[1:]).all()


def test_seeded_and_deterministic():
    Ht = true_motion(8)
    tr = tracks_from(Ht, random_points(80), noise=0.5)
    a = camera.estimate_camera_motion(tr, seed=3)
    b = camera.estimate_camera_motion(tr, seed=3)
    assert np.array_equal(a.homographies, b.homographies) and a.models == b.models


def test_fallbacks_with_few_points():
    shift = np.array([[1, 0, 4.0], [0, 1, -2.0], [0, 0, 1]])
    src = np.array([[50.0, 60.0], [200.0, 150.0]])
    two = camera.fit_motion(src, camera.apply_homography(shift, src), W, H)
    assert two.model == "similarity" and np.allclose(two.H, shift, atol=1e-9)
    one = camera.fit_motion(src[:1], src[:1] + [4, -2], W, H)
    assert one.model == "translation" and np.allclose(one.H, shift)
    none = camera.fit_motion(np.zeros((0, 2)), np.zeros((0, 2)), W, H)
    assert none.model == "identity" and np.array_equal(none.H, np.eye(3)) and not none.inliers.any()
    # Plenty of points, but all in a small patch: a homography would be a wild extrapolation.
    patch = np.random.default_rng(0).uniform([100, 100], [112, 108], (40, 2))
    fit = camera.fit_motion(patch, camera.apply_homography(shift, patch), W, H)
    assert fit.model in ("similarity", "translation") and np.allclose(fit.H, shift, atol=1e-6)
    # max_model caps the model.
    pts = random_points(60)
    assert camera.fit_motion(pts, pts + 3, W, H, max_model="translation").model == "translation"


def test_mirror_is_not_a_plausible_camera_motion():
    pts = random_points(80)
    mirror = np.array([[-1, 0, W - 1.0], [0, 1, 0], [0, 0, 1]])
    fit = camera.fit_motion(pts, camera.apply_homography(mirror, pts), W, H)
    assert fit.model == "identity"  # no motion model explains most points: none is claimed


def test_no_points_gives_identity_and_a_report():
    tr = PointTracks(tracks=np.zeros((5, 0, 2), np.float32), visibility=np.zeros((5, 0), bool),
                     query_frames=np.zeros(0, np.int64), width=W, height=H)
    m = camera.estimate_camera_motion(tr)
    assert m.models == ("identity",) * 5 and np.allclose(m.homographies, np.eye(3))
    report = camera.motion_report(m)
    assert "5 identity" in report and "without enough background points" in report


def test_gap_without_points_holds_the_previous_motion():
    Ht = true_motion(10)
    vis = np.ones((10, 120), bool)
    vis[5] = False  # a frame where the tracker lost everything
    m = camera.estimate_camera_motion(tracks_from(Ht, random_points(120), visible=vis))
    assert m.models[5] == "identity" and np.allclose(m.homographies[5], m.homographies[4])
    assert grid_error(m.homographies[6:], Ht[6:]).max() < 2e-3  # and picks up again after it


def test_composes_across_tracks_that_start_late():
    T = 24
    Ht = true_motion(T, pan=(3.0, 1.0))
    # Three sets of tracks, each queried in a later chunk; no point spans the first and last frames.
    sets, vis, query = [], [], []
    for k, (a, b) in enumerate([(0, 10), (7, 18), (15, 24)]):
        q = random_points(60, seed=k, margin=0)  # grid queried in frame a's pixels
        p0 = camera.apply_homography(camera.invert(Ht[a]), q)
        v = np.zeros((T, 60), bool)
        v[a:b] = True
        sets.append(p0)
        vis.append(v)
        query.append(np.full(60, a))
    tr = tracks_from(Ht, np.concatenate(sets), visible=np.concatenate(vis, 1), query=np.concatenate(query))
    assert not (tr.visibility[0] & tr.visibility[-1]).any()
    m = camera.estimate_camera_motion(tr)
    assert grid_error(m.homographies, Ht).max() < 5e-3
    # With noise, composing must not drift much either.
    noisy = tracks_from(Ht, np.concatenate(sets), noise=0.5, visible=np.concatenate(vis, 1))
    mn = camera.estimate_camera_motion(noisy)
    assert grid_error(mn.homographies, Ht).mean() < 0.6


def test_rescale_invert_compose_rebase():
    Ht = true_motion(6)
    m = CameraMotion(homographies=Ht, models=("homography",) * 6, inliers=np.full(6, 10),
                     residual=np.full(6, 0.5), width=W, height=H)
    big = camera.rescale_motion(m, 2 * W, 2 * H)
    assert (big.width, big.height) == (2 * W, 2 * H) and np.allclose(big.residual, 1.0)
    # Pixel centres at integers: the small image's pixel p covers big pixels 2p and 2p+1, centred at 2p + 0.5.
    S = camera.scale_matrix((W, H), (2 * W, 2 * H))
    assert np.allclose(camera.apply_homography(S, np.array([[0.0, 0.0], [10.0, 3.0]])), [[0.5, 0.5], [20.5, 6.5]])
    p = random_points(20)
    for t in range(6):
        lhs = camera.apply_homography(big.homographies[t], camera.apply_homography(S, p))
        rhs = camera.apply_homography(S, camera.apply_homography(Ht[t], p))
        assert np.allclose(lhs, rhs, atol=1e-8)
    back = camera.rescale_motion(big, W, H)
    assert np.allclose(back.homographies, Ht, atol=1e-10)
    assert np.allclose(camera.compose(Ht[3], camera.invert(Ht[3])), np.eye(3), atol=1e-12)
    rel = camera.relative_homography(m, 2, 5)
    assert np.allclose(camera.apply_homography(rel, camera.apply_homography(Ht[2], p)),
                       camera.apply_homography(Ht[5], p), atol=1e-8)
    rb = camera.rebase_motion(m, 2)
    assert np.allclose(rb.homographies[2], np.eye(3)) and np.allclose(rb.homographies[5], rel)


def test_bad_tracks_are_refused():
    with pytest.raises(ValueError, match="must match"):
        camera.check_tracks(PointTracks(tracks=np.zeros((4, 3, 2)), visibility=np.zeros((4, 2), bool),
                                        query_frames=np.zeros(3), width=W, height=H))
    with pytest.raises(ValueError, match=r"\[frames, points, 2\]"):
        camera.check_tracks(PointTracks(tracks=np.zeros((4, 3)), visibility=np.zeros((4, 3), bool),
                                        query_frames=np.zeros(3), width=W, height=H))


def test_node_reports_and_refuses_empty_tracks():
    Ht = true_motion(6)
    res = camera_node.MarionetteEstimateCameraMotion.execute(
        point_tracks=tracks_from(Ht, random_points(100)), max_model="homography", threshold_px=3.0, seed=0)
    motion = res.args[0]
    assert isinstance(motion, CameraMotion) and len(motion) == 6
    assert grid_error(motion.homographies, Ht).max() < 2e-3
    assert "homography" in res.ui["text"][0] and "residual" in res.ui["text"][0]
    empty = PointTracks(tracks=np.zeros((6, 0, 2), np.float32), visibility=np.zeros((6, 0), bool),
                        query_frames=np.zeros(0, np.int64), width=W, height=H)
    with pytest.raises(ValueError, match="no visible background point"):
        camera_node.MarionetteEstimateCameraMotion.execute(point_tracks=empty, max_model="homography",
                                                           threshold_px=3.0, seed=0)
