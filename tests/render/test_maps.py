"""Champ guidance-map conventions (champ_spec.md §8.2), checked pixel by pixel on meshes with known
geometry, for both render backends."""
import logging

import numpy as np
import pytest
import torch

from marionette.nodes.render import geometry, maps, raster
from marionette.nodes.render.maps import SEMANTIC_RGB, render_guidance
from marionette.nodes.types import BodySequence

W, H = 96, 80
F = 100.0
CX, CY = 48.0, 40.0  # integer principal point: the optical axis hits a pixel centre
K0 = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1]])


def _gl_available():
    try:
        from marionette.nodes.render.gl import GLRenderer

        GLRenderer(4, 4)
        return True
    except Exception:
        return False


BACKENDS = ["torch", pytest.param("opengl", marks=pytest.mark.skipif(not _gl_available(),
                                                                     reason="no EGL/pyrender here"))]


def make_seq(verts, faces, labels=None, K=K0, width=W, height=H):
    verts = np.asarray(verts, np.float32)
    if verts.ndim == 2:
        verts = verts[None]
    T, V = verts.shape[:2]
    labels = np.zeros(V, np.int64) if labels is None else np.asarray(labels, np.int64)
    K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3)).copy()
    return BodySequence(model="test", shape=np.zeros(0), body_pose=np.zeros((T, 0, 3)),
                        global_orient=np.zeros((T, 3)), transl=np.zeros((T, 3)), K=K, width=width,
                        height=height, vertices=verts, faces=np.asarray(faces, np.int32), part_labels=labels,
                        keypoints2d=np.zeros((T, 134, 2)), fit_error=np.zeros(T))


def unproject(u, v, z, K=K0):
    """Camera-space point seen at pixel (u, v) at depth z."""
    return np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])


def quad(corners_px, z, flip=False):
    """A fronto-parallel quad at depth z whose corners project to the given pixel positions."""
    verts = np.stack([unproject(u, v, z) for u, v in corners_px])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return verts, (faces[:, ::-1] if flip else faces)


def uv_sphere(radius, centre, n_lat=96, n_lon=192):
    """A closed UV sphere wound outward."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius + centre
    faces = []
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, idx(0, j + 1), idx(0, j)])
        faces.append([len(verts) - 1, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            faces.append([idx(i, j), idx(i, j + 1), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i + 1, j)])
    faces = np.array(faces)
    if geometry.closed_orientation(faces, verts) < 0:
        faces = faces[:, ::-1]
    return verts, faces


def coverage(corners_px, width=W, height=H):
    """Pixel centres strictly inside an axis-aligned rectangle given by its corners."""
    us = [c[0] for c in corners_px]
    vs = [c[1] for c in corners_px]
    cols, rows = np.arange(width), np.arange(height)
    return ((rows[:, None] > min(vs)) & (rows[:, None] < max(vs)) & (cols[None] > min(us)) & (cols[None] < max(us)))


def levels(img):
    return np.rint(img * 255).astype(int)


def test_semantic_table_is_opencv_viridis():
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.applyColorMap((10 * np.arange(24)).astype(np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)[:, 0]
    np.testing.assert_array_equal(SEMANTIC_RGB, bgr[:, ::-1])


def test_srgb_round_trip_is_exact_for_every_byte():
    c = np.arange(256) / 255.0
    back = geometry.quantize8(geometry.linear_to_srgb(torch.tensor(geometry.srgb_to_linear(c), dtype=torch.float32)))
    np.testing.assert_array_equal(back.numpy(), np.arange(256))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", [False, True])
def test_fronto_parallel_plane(backend, flip):
    corners = [(20.3, 15.6), (70.4, 15.6), (70.4, 60.7), (20.3, 60.7)]
    verts, faces = quad(corners, 2.0, flip)
    out = render_guidance(make_seq(verts, faces), backend=backend)
    cov = coverage(corners)
    np.testing.assert_array_equal(out["mask"][0], cov.astype(np.float32))
    # One depth for the whole body: every body pixel is "nearest" (255), background 0.
    np.testing.assert_array_equal(levels(out["depth"][0]), np.where(cov, 255, 0)[..., None].repeat(3, -1))
    # Facing the camera from either winding: (128, 128, 255) on the body, black elsewhere.
    np.testing.assert_array_equal(levels(out["normal"][0])[cov], np.tile([128, 128, 255], (cov.sum(), 1)))
    assert (out["normal"][0][~cov] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tilted_plane_depth_ramp_and_normal(backend):
    # The plane z = z0 + a * y (camera frame, y down), bigger than the view, all in front.
    z0, a = 3.0, 0.8
    pts = [(-5.0, -2.5), (5.0, -2.5), (5.0, 2.5), (-5.0, 2.5)]
    verts = np.array([[x, y, z0 + a * y] for x, y in pts])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    out = render_guidance(make_seq(verts, faces), backend=backend)
    assert out["mask"][0].all()
    rows = np.arange(H, dtype=np.float64)
    z = z0 / (1 - a * (rows - CY) / F)  # where each row's rays meet the plane
    expect = np.floor(255 * (1 - (z - z.min()) / (z.max() - z.min())) + 0.5)
    got = levels(out["depth"][0])
    assert np.abs(got - expect[:, None, None]).max() <= 1
    assert got[0, 0, 0] == 255 and got[-1, 0, 0] == 0  # top rows are nearest here
    # Normal toward the camera in Champ's axes (x right, y up, z to the viewer): OpenCV
    # (0, a, -1) -> (0, -a, 1). The near top, far bottom plane is a ceiling: it faces down.
    n = np.array([0.0, -a, 1.0]) / np.hypot(a, 1.0)
    expect_n = np.floor(255 * (n + 1) / 2 + 0.5)
    assert np.abs(levels(out["normal"][0]) - expect_n).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_depths_normalise_to_extremes(backend):
    near_v, near_f = quad([(10.5, 10.5), (40.5, 10.5), (40.5, 30.5), (10.5, 30.5)], 2.0)
    far_v, far_f = quad([(50.5, 40.5), (90.5, 40.5), (90.5, 70.5), (50.5, 70.5)], 5.0)
    seq = make_seq(np.concatenate([near_v, far_v]), np.concatenate([near_f, far_f + 4]))
    d = levels(render_guidance(seq, maps=("depth",), backend=backend)["depth"][0, :, :, 0])
    assert (d[11:31, 11:41] == 255).all() and (d[41:71, 51:91] == 0).all()
    assert set(np.unique(d)) == {0, 255}


@pytest.mark.parametrize("backend", BACKENDS)
def test_sphere_normals_match_analytic(backend):
    r, zc = 0.5, 2.0
    verts, faces = uv_sphere(r, [0.0, 0.0, zc])
    out = render_guidance(make_seq(verts, faces), maps=("normal", "mask"), backend=backend)
    # Analytic ray/sphere hit for every pixel centre.
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    d = np.stack([(u - CX) / F, (v - CY) / F, np.ones_like(u)], -1)
    b = d[..., 2] * zc
    disc = b ** 2 - (d ** 2).sum(-1) * (zc ** 2 - r ** 2)
    hit = disc > 0
    t = (b - np.sqrt(np.where(hit, disc, 0))) / (d ** 2).sum(-1)
    n_cv = (t[..., None] * d - [0, 0, zc]) / r
    n = n_cv * [1, -1, -1]  # Champ's axes
    facing = hit & (n[..., 2] > 0.3)  # away from the silhouette, where the mesh is a fine fit
    decoded = out["normal"][0] * 2 - 1
    err = np.abs(decoded - n)[facing]
    assert facing.sum() > 1500
    assert err.max() < 0.01, err.max()  # 8-bit steps are 0.008 in n
    # Straight at the camera: (0, 0, 1) -> 127.5 levels in x and y, a rounding tie, so +-1.
    assert np.abs(levels(out["normal"][0])[int(CY), int(CX)] - [128, 128, 255]).max() <= 1
    mask = out["mask"][0].astype(bool)
    assert mask[facing].all()
    assert not mask[~hit].any()  # the polygon lies inside the true sphere
    assert (hit & ~mask).sum() <= 0.01 * hit.sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_part_semantic_colours_and_mask(backend):
    a_v, a_f = quad([(5.5, 5.5), (45.5, 5.5), (45.5, 70.5), (5.5, 70.5)], 2.0)
    b_v, b_f = quad([(50.5, 5.5), (90.5, 5.5), (90.5, 70.5), (50.5, 70.5)], 2.5)
    labels = np.array([3] * 4 + [17] * 4)
    seq = make_seq(np.concatenate([a_v, b_v]), np.concatenate([a_f, b_f + 4]), labels)
    out = render_guidance(seq, backend=backend)
    sem = levels(out["semantic"][0])
    in_a = coverage([(5.5, 5.5), (45.5, 70.5)])
    in_b = coverage([(50.5, 5.5), (90.5, 70.5)])
    assert (sem[in_a] == SEMANTIC_RGB[3]).all() and (sem[in_b] == SEMANTIC_RGB[17]).all()
    assert (sem[~(in_a | in_b)] == 0).all()
    mask = out["mask"][0]
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(mask.astype(bool), in_a | in_b)
    np.testing.assert_array_equal(mask.astype(bool), out["normal"][0].any(-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_part_boundary_blends_in_linear_light(backend):
    # One quad, left edge label 0, right edge label 23: a linear-light ramp between the colours.
    verts, faces = quad([(10.5, 10.5), (80.5, 10.5), (80.5, 60.5), (10.5, 60.5)], 2.0)
    out = render_guidance(make_seq(verts, faces, [0, 23, 23, 0]), maps=("semantic",), backend=backend)
    row = out["semantic"][0, 30, 11:81]
    lo, hi = geometry.srgb_to_linear(SEMANTIC_RGB[[0, 23]] / 255.0)
    s = (np.arange(11, 81) - 10.5) / 70.0  # fronto-parallel: screen position = blend weight
    expect = np.floor(255 * geometry.linear_to_srgb(torch.tensor(lo + s[:, None] * (hi - lo))).numpy() + 0.5)
    assert np.abs(levels(row) - expect).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_grid_has_no_cracks(backend):
    # Vertices exactly on pixel centres: every interior pixel centre lies on some edge.
    n = 12
    g = np.stack(np.meshgrid(np.arange(n + 1) * 6 + 10.0, np.arange(n + 1) * 5 + 8.0), -1).reshape(-1, 2)
    verts = np.stack([unproject(u, v, 2.0) for u, v in g])
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    faces = np.concatenate([np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:]], -1).reshape(-1, 3),
                            np.stack([idx[:-1, :-1], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 3)])
    mask = render_guidance(make_seq(verts, faces), maps=("mask",), backend=backend)["mask"][0]
    assert mask[9:68, 11:82].all()


def test_intrinsics_scale_with_pixel_centres_at_integers():
    K2 = geometry.scale_intrinsics(K0, (W, H), (2 * W, H // 2))
    p = np.array([0.3, -0.2, 2.0])
    u, v = (K0 @ p)[:2] / p[2]
    u2, v2 = (K2 @ p)[:2] / p[2]
    assert np.allclose([u2, v2], [2 * (u + 0.5) - 0.5, 0.5 * (v + 0.5) - 0.5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_size_scales_K(backend):
    verts, faces = uv_sphere(0.4, [0.1, -0.05, 2.0], 48, 96)
    seq = make_seq(verts, faces)
    small = render_guidance(seq, maps=("mask",), backend=backend)["mask"][0]
    big = render_guidance(seq, width=3 * W, height=2 * H, maps=("mask",), backend=backend)["mask"][0]
    assert big.shape == (2 * H, 3 * W)
    # Area scales by 3 x 2 and the silhouette's centroid maps by u' = s (u + 0.5) - 0.5.
    assert abs(big.sum() / small.sum() - 6.0) < 0.1
    ys, xs = np.nonzero(small)
    ys2, xs2 = np.nonzero(big)
    assert abs(xs2.mean() - (3 * (xs.mean() + 0.5) - 0.5)) < 0.3
    assert abs(ys2.mean() - (2 * (ys.mean() + 0.5) - 0.5)) < 0.3


def _body_like(T=3):
    """A few overlapping ellipsoids with several part labels, posed differently per frame."""
    parts, faces, labels, off = [], [], [], 0
    ellipsoids = [((0, 0, 0), (0.3, 0.45, 0.2)), ((0, -0.6, -0.05), (0.15, 0.17, 0.15)),
                  ((0.35, 0.05, -0.1), (0.09, 0.4, 0.09)), ((-0.3, 0.5, 0.05), (0.1, 0.45, 0.1))]
    for k, (centre, radii) in enumerate(ellipsoids):
        v, f = uv_sphere(1.0, [0, 0, 0], 24, 48)
        parts.append(v * radii + centre)
        faces.append(f + off)
        labels.append(np.where(v[:, 1] > 0, 2 * k, 2 * k + 9))
        off += len(v)
    base = np.concatenate(parts)
    frames = []
    for t in range(T):
        ang = 0.3 * t
        R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
        frames.append(base @ R.T + [0.05 * t, 0.02 * t, 3.0 + 0.2 * t])
    return make_seq(np.stack(frames), np.concatenate(faces), np.concatenate(labels))


@pytest.mark.skipif(not _gl_available(), reason="no EGL/pyrender here")
def test_backends_agree():
    seq = _body_like(2)
    a = render_guidance(seq, backend="torch")
    b = render_guidance(seq, backend="opengl")
    mask = a["mask"].astype(bool)
    # Silhouette band: pixels with a neighbour of the other kind.
    pad = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    edge = np.zeros_like(mask)
    for dy, dx in [(0, 1), (2, 1), (1, 0), (1, 2)]:
        edge |= pad[:, dy:dy + H, dx:dx + W] != mask
    assert (a["mask"] != b["mask"])[~edge].sum() == 0
    assert (a["mask"] != b["mask"]).sum() <= 0.02 * edge.sum()
    for name in ("depth", "normal", "semantic"):
        diff = np.abs(levels(a[name]) - levels(b[name])).max(-1)
        assert diff.mean() < 0.05, name
        assert (diff[~edge] > 1).sum() <= 0.002 * mask.sum(), name  # off the edges: rounding only


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_per_frame_and_progress(backend):
    seq = _body_like(3)
    calls = []
    batch = render_guidance(seq, backend=backend, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for t in range(3):
        one = make_seq(seq.vertices[t], seq.faces, seq.part_labels, seq.K[t])
        single = render_guidance(one, backend=backend)
        for name in maps.MAP_NAMES:
            np.testing.assert_array_equal(batch[name][t], single[name][0], err_msg=f"{name} frame {t}")
    assert batch["depth"].dtype == np.float32 and batch["mask"].shape == (3, H, W)
    assert batch["normal"].shape == (3, H, W, 3)


def test_progress_exception_cancels():
    seq = _body_like(3)
    calls = []

    def cancel(done, total):
        calls.append(done)
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        render_guidance(seq, backend="torch", progress=cancel)
    assert calls == [1]


def test_only_requested_maps_and_threads_restored():
    before = torch.get_num_threads()
    out = render_guidance(_body_like(1), maps=("mask", "depth"), backend="torch", cpu_threads=1)
    assert sorted(out) == ["depth", "mask"]
    assert torch.get_num_threads() == before


def test_culling_closed_mesh_changes_nothing():
    seq = _body_like(1)
    verts = torch.tensor(seq.vertices[0])
    faces = torch.tensor(seq.faces, dtype=torch.long)
    K = torch.tensor(seq.K[0])
    assert geometry.closed_orientation(seq.faces, seq.vertices[0]) == 1
    culled = raster.rasterize(verts, faces, K, W, H, cull=1)
    full = raster.rasterize(verts, faces, K, W, H, cull=0)
    assert torch.equal(culled.pix, full.pix) and torch.equal(culled.face, full.face)


def test_angle_weighted_normals_ignore_triangulation():
    # A cube corner at the origin: three unit squares meeting there. Blender's corner-angle
    # weighting gives (1, 1, 1)/sqrt(3) however the squares are split; area weighting does not.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]],
                     dtype=torch.float32)
    x0_y0 = [[0, 2, 5], [0, 5, 3], [0, 3, 6], [0, 6, 1]]
    both = torch.tensor([[0, 1, 4], [0, 4, 2]] + x0_y0)  # z = 0 square split through the corner
    one = torch.tensor([[0, 1, 2], [1, 4, 2]] + x0_y0)   # split the other way: corner in one triangle
    expect = torch.ones(3) / 3 ** 0.5
    for faces in (both, one):
        assert torch.allclose(geometry.vertex_normals(v, faces, "angle")[0], expect, atol=1e-6)
    assert torch.allclose(geometry.vertex_normals(v, both, "area")[0], expect, atol=1e-6)
    assert not torch.allclose(geometry.vertex_normals(v, one, "area")[0], expect, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_faces_behind_the_clip_start_are_dropped(backend):
    verts, faces = quad([(10.5, 10.5), (80.5, 10.5), (80.5, 60.5), (10.5, 60.5)], 2.0)
    extra = np.array([[0.0, 0.0, 0.01], [0.1, 0.0, -1.0], [0.0, 0.1, 1.0]])  # one vertex too near
    seq = make_seq(np.concatenate([verts, extra]), np.concatenate([faces, [[4, 5, 6]]]))
    out = render_guidance(seq, maps=("mask",), backend=backend)["mask"][0]
    np.testing.assert_array_equal(out.astype(bool), coverage([(10.5, 10.5), (80.5, 60.5)]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["off_screen", "too_near"])
def test_invisible_body_gives_empty_maps(backend, where):
    if where == "off_screen":
        verts, faces = quad([(200.5, 10.5), (280.5, 10.5), (280.5, 60.5), (200.5, 60.5)], 2.0)
    else:  # every face has a vertex nearer than the clip start
        verts, faces = np.array([[0.0, 0.0, 0.01], [0.1, 0.0, 1.0], [0.0, 0.1, 1.0]]), np.array([[0, 1, 2]])
    out = render_guidance(make_seq(verts, faces), backend=backend)
    assert all(not a.any() for a in out.values())


def test_opengl_falls_back_to_torch_with_one_warning(monkeypatch, caplog):
    import marionette.nodes.render.gl as gl

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("no EGL display")

    monkeypatch.setattr(gl, "GLRenderer", Broken)
    monkeypatch.setattr(maps, "_gl_error", None)
    seq = _body_like(1)
    with caplog.at_level(logging.WARNING):
        out = render_guidance(seq, backend="opengl")
        render_guidance(seq, backend="opengl")
    ref = render_guidance(seq, backend="torch")
    assert all(np.array_equal(out[k], ref[k]) for k in ref)
    warnings = [r for r in caplog.records if "torch rasteriser" in r.getMessage()]
    assert len(warnings) == 1 and "no EGL display" in warnings[0].getMessage()


def test_auto_backend_choice():
    assert maps._resolve_backend("auto", torch.device("cpu")) == "opengl"
    assert maps._resolve_backend("auto", torch.device("cuda")) == "torch"
    assert maps._resolve_backend("torch", torch.device("cpu")) == "torch"
    # Whatever "auto" picks, the maps are the conventions' (agreement is tested above).
    out = render_guidance(_body_like(1), maps=("mask",))
    assert out["mask"].any()


@pytest.mark.parametrize("change, message", [
    (lambda s: setattr(s, "vertices", s.vertices[:0]), "no frames"),
    (lambda s: s.K.__setitem__((0, 0, 0), -5.0), "pinhole"),
    (lambda s: s.K.__setitem__((0, 2, 0), 0.1), "pinhole"),
    (lambda s: setattr(s, "K", s.K[:, :2]), "K must be"),
    (lambda s: setattr(s, "width", 0), "width"),
    (lambda s: setattr(s, "vertices", s.vertices * [1, 1, -1]), "behind the camera"),
    (lambda s: setattr(s, "part_labels", s.part_labels + 30), "0..23"),
    (lambda s: setattr(s, "faces", s.faces + 10_000), "faces index"),
    (lambda s: s.vertices.__setitem__((0, 0, 0), np.nan), "finite"),
])
def test_bad_inputs_raise(change, message):
    seq = _body_like(1)
    seq.K = seq.K.copy()
    seq.vertices = seq.vertices.copy()
    change(seq)
    with pytest.raises(ValueError, match=message):
        render_guidance(seq, backend="torch")


def test_bad_arguments_raise():
    seq = _body_like(1)
    with pytest.raises(ValueError, match="maps"):
        render_guidance(seq, maps=("depth", "albedo"))
    with pytest.raises(ValueError, match="backend"):
        render_guidance(seq, backend="blender")
    with pytest.raises(ValueError, match="height"):
        render_guidance(seq, height=0)
