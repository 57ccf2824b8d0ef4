"""Silhouettes for the body stage: a small exact triangle rasteriser (for masks and IoU), and the
differentiable silhouette term of the fitter.

The fitting term needs no differentiable renderer. From the target mask it precomputes

* ``dist_out``: for every pixel, the distance in pixels to the nearest mask pixel (0 inside),
* ``contour``: points on the mask's outline (outline pixels on the image border are dropped:
  there the person is cut by the frame, not outlined),

and then, with the body's projected vertices ``v``:

* *inside*: every vertex that lands in the image should lie in the mask — ``dist_out(v)``
  (bilinear, so it pulls vertices inward), which shrinks a body that is too wide;
* *cover*: every outline point should have a vertex on it — the distance to its nearest
  vertex (nearest found without gradient, distance with), which grows a body that is too thin.

Both are Geman–McClure-robust, so a mask that also holds hair, a bag or another person bends
the fit only boundedly. This symmetric chamfer between the projected surface and the mask is
cheap on a CPU (one bilinear lookup per vertex, one nearest-neighbour search over a vertex
sample per outline point) and gives the shape (girth, height) and pose a pull toward the
outline.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Rasterising
# ---------------------------------------------------------------------------------------------

def rasterize_silhouette(points2d, faces, height: int, width: int, valid=None) -> torch.Tensor:
    """Pixels covered by triangles: bool ``[H, W]`` (pixel centres at integer coordinates; a pixel
    is covered when its centre lies in a triangle, edges included).

    Args:
        points2d: ``[V, 2]`` vertex positions in pixels (torch or numpy).
        faces: ``[F, 3]`` vertex indices.
        valid: optional ``[V]`` bool; faces touching an invalid vertex (e.g. behind the camera)
            are skipped.
    """
    xy = torch.as_tensor(points2d).detach().double()
    faces = torch.as_tensor(np.asarray(faces) if not torch.is_tensor(faces) else faces,
                            device=xy.device).long()
    out = torch.zeros(height * width, dtype=torch.bool, device=xy.device)
    if valid is not None:
        valid = torch.as_tensor(valid, device=xy.device).bool()
        faces = faces[valid[faces].all(1)]
    tri = xy[faces]  # [F, 3, 2]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    x0 = torch.ceil(tri[..., 0].min(1).values).clamp(min=0)
    x1 = torch.floor(tri[..., 0].max(1).values).clamp(max=width - 1)
    y0 = torch.ceil(tri[..., 1].min(1).values).clamp(min=0)
    y1 = torch.floor(tri[..., 1].max(1).values).clamp(max=height - 1)
    keep = (x1 >= x0) & (y1 >= y0) & (area.abs() > 1e-12) & torch.isfinite(area)
    if not keep.any():
        return out.view(height, width)
    a, b, c, area = a[keep], b[keep], c[keep], area[keep]
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    size = torch.maximum(x1 - x0, y1 - y0) + 1
    lo = 0
    s = 2
    while lo < int(size.max()):
        sel = torch.nonzero((size > lo) & (size <= s))[:, 0]
        lo, s_now = s, s
        s *= 2
        if sel.numel() == 0:
            continue
        off = torch.arange(s_now, device=xy.device, dtype=xy.dtype)
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        ox, oy = ox.reshape(-1), oy.reshape(-1)
        chunk = max(1, 4_000_000 // (s_now * s_now))
        for i in range(0, sel.numel(), chunk):
            f = sel[i:i + chunk]
            px = x0[f, None] + ox[None]
            py = y0[f, None] + oy[None]
            sign = torch.sign(area[f])[:, None]

            def edge(p, q):
                return ((q[f, 0, None] - p[f, 0, None]) * (py - p[f, 1, None])
                        - (q[f, 1, None] - p[f, 1, None]) * (px - p[f, 0, None])) * sign

            inside = (edge(a, b) >= 0) & (edge(b, c) >= 0) & (edge(c, a) >= 0)
            inside &= (px <= x1[f, None]) & (py <= y1[f, None])
            idx = (py[inside] * width + px[inside]).long()
            out[idx] = True
    return out.view(height, width)


def render_silhouettes(vertices, faces, K, height: int, width: int, near: float = 1e-2) -> np.ndarray:
    """Silhouettes of camera-space meshes: bool ``[T, H, W]`` from ``vertices`` ``[T, V, 3]``
    (metres, OpenCV camera) and intrinsics ``K`` ``[3, 3]`` or ``[T, 3, 3]``."""
    verts = torch.as_tensor(np.asarray(vertices) if not torch.is_tensor(vertices) else vertices).double()
    K = torch.as_tensor(np.asarray(K) if not torch.is_tensor(K) else K, device=verts.device).double()
    masks = []
    for t in range(verts.shape[0]):
        Kt = K if K.dim() == 2 else K[t]
        v = verts[t]
        z = v[:, 2]
        f = torch.stack([Kt[0, 0], Kt[1, 1]])
        xy = v[:, :2] / z.clamp(min=near)[:, None] * f + torch.stack([Kt[0, 2], Kt[1, 2]])
        masks.append(rasterize_silhouette(xy, faces, height, width, valid=z > near).cpu().numpy())
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


def mask_iou(a, b) -> np.ndarray:
    """Intersection over union per frame of two ``[T, H, W]`` masks (1.0 where both are empty)."""
    a = np.asarray(a).astype(bool)
    b = np.asarray(b).astype(bool)
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    union = (a | b).reshape(a.shape[0], -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# ---------------------------------------------------------------------------------------------
# Distance fields
# ---------------------------------------------------------------------------------------------

def _edt_torch(outside: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance (pixels) from every pixel to the nearest False pixel of
    ``outside`` ``[H, W]``: an exact column pass (1-D distances by running minima) and a
    brute-force row pass. Fallback when SciPy is missing; O(H·W²) so slower."""
    H, W = outside.shape
    big = float(H + W)
    dev = outside.device
    rows = torch.arange(H, device=dev, dtype=torch.float32)[:, None]
    f = torch.where(outside, torch.full_like(rows.expand(H, W), big * 4), torch.zeros(H, W, device=dev))
    # column pass: distance to the nearest zero in the same column, via running minima both ways
    down = torch.cummin(f - rows, 0).values + rows
    up = torch.flip(torch.cummin(torch.flip(f + rows, [0]), 0).values, [0]) - rows
    g2 = torch.minimum(down, up).clamp(max=big * 4) ** 2  # [H, W]
    cols = torch.arange(W, device=dev, dtype=torch.float32)
    diff2 = (cols[:, None] - cols[None, :]) ** 2  # [W(j), W(k)]
    out = torch.empty(H, W, device=dev)
    step = max(1, 2_000_000 // (W * W))
    for i in range(0, H, step):
        out[i:i + step] = (g2[i:i + step, None, :] + diff2[None]).min(-1).values
    return out.sqrt()


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 distance in pixels to the nearest True pixel of ``mask`` (0 on it).
    An empty mask gives a large constant distance."""
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return np.full(mask.shape, float(sum(mask.shape)), np.float32)
    try:
        from scipy.ndimage import distance_transform_edt
    except ImportError:  # pragma: no cover - SciPy ships with ComfyUI; this keeps us working without
        return _edt_torch(torch.from_numpy(~mask)).numpy().astype(np.float32)
    return distance_transform_edt(~mask).astype(np.float32)


def contour_points(mask: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Up to ``max_points`` ``(x, y)`` pixels on the outline of ``mask`` (mask pixels with a
    4-neighbour outside it), leaving out pixels in the first/last row/column (where the frame,
    not the person, ends the mask). Deterministic for a given seed."""
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return np.zeros((0, 2), np.float32)
    pad = np.pad(m, 1, mode="edge")
    interior = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    edge = m & ~interior
    edge[0, :] = edge[-1, :] = False
    edge[:, 0] = edge[:, -1] = False
    ys, xs = np.nonzero(edge)
    pts = np.stack([xs, ys], 1).astype(np.float32)
    if len(pts) > max_points:
        idx = np.random.default_rng(seed).choice(len(pts), max_points, replace=False)
        pts = pts[np.sort(idx)]
    return pts


class SilhouetteTarget:
    """Per-frame precomputed targets of the silhouette term.

    Attributes:
        dist: ``[T, 1, H, W]`` distance outside the mask (pixels), on ``device``.
        contour: ``[T, N, 2]`` outline points (pixels), ``contour_valid`` ``[T, N]`` bool.
        has_mask: ``[T]`` bool, frames whose mask holds any pixel.
    """

    def __init__(self, masks: np.ndarray, device, dtype, max_contour: int = 256):
        masks = np.asarray(masks).astype(bool)
        T, H, W = masks.shape
        self.height, self.width = H, W
        dist = np.stack([distance_outside(m) for m in masks])
        self.dist = torch.as_tensor(dist, device=device, dtype=dtype)[:, None]
        pts = [contour_points(m, max_contour, seed=t) for t, m in enumerate(masks)]
        n = max(1, max(len(p) for p in pts))
        contour = np.zeros((T, n, 2), np.float32)
        valid = np.zeros((T, n), bool)
        for t, p in enumerate(pts):
            contour[t, :len(p)] = p
            valid[t, :len(p)] = True
        self.contour = torch.as_tensor(contour, device=device, dtype=dtype)
        self.contour_valid = torch.as_tensor(valid, device=device)
        self.has_mask = torch.as_tensor(masks.reshape(T, -1).any(1), device=device)
        self._nearest = None

    def sample_dist(self, xy: torch.Tensor,
                    frames: slice | torch.Tensor = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear ``dist_out`` at ``xy`` ``[T, N, 2]`` pixels → (``[T, N]`` distances, ``[T, N]``
        bool in-image)."""
        H, W = self.height, self.width
        gx = (xy[..., 0] + 0.5) / W * 2 - 1  # align_corners=False: pixel centre i ↔ (i + 0.5)/W
        gy = (xy[..., 1] + 0.5) / H * 2 - 1
        grid = torch.stack([gx, gy], -1)[:, :, None]  # [T, N, 1, 2]
        d = F.grid_sample(self.dist[frames], grid, mode="bilinear", padding_mode="border", align_corners=False)
        inside = (xy[..., 0] >= -0.5) & (xy[..., 0] <= W - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] <= H - 0.5)
        return d[:, 0, :, 0], inside

    def nearest(self, xy: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Index ``[T, N]`` of the vertex (in ``xy`` ``[T, M, 2]``) nearest to each outline point,
        recomputed when ``update`` (else the last assignment is reused)."""
        if update or self._nearest is None or self._nearest.shape[0] != xy.shape[0]:
            with torch.no_grad():
                idx = []
                for t0 in range(0, xy.shape[0], 16):
                    d = torch.cdist(self.contour[t0:t0 + 16].float(), xy[t0:t0 + 16].detach().float())
                    idx.append(d.argmin(-1))
                self._nearest = torch.cat(idx)
        return self._nearest


def geman_mcclure(sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """ρ(r) = σ² r² / (σ² + r²) from squared residuals ``sq``: quadratic for r ≪ σ, bounded by σ²."""
    s2 = sigma * sigma
    return s2 * sq / (s2 + sq)


def silhouette_energy(target: SilhouetteTarget, xy: torch.Tensor, sigma: float,
                      update_nearest: bool = True) -> torch.Tensor:
    """Per-frame silhouette energy ``[T]`` (squared pixels, robustified) for projected vertices
    ``xy`` ``[T, M, 2]``: mean *inside* term over the vertices in the image plus mean *cover* term
    over the outline points. Frames without a mask give 0."""
    d, inside = target.sample_dist(xy)
    w_in = inside.to(xy.dtype)
    e_in = (geman_mcclure(d * d, sigma) * w_in).sum(1) / w_in.sum(1).clamp(min=1)
    idx = target.nearest(xy, update=update_nearest)
    near = torch.gather(xy, 1, idx[..., None].expand(-1, -1, 2))
    r2 = ((near - target.contour) ** 2).sum(-1)
    w_c = target.contour_valid.to(xy.dtype)
    e_cov = (geman_mcclure(r2, sigma) * w_c).sum(1) / w_c.sum(1).clamp(min=1)
    return (e_in + e_cov) * target.has_mask.to(xy.dtype)


def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``[count]`` of a farthest-point sample of ``points`` ``[N, 3]`` (deterministic,
    starting from the point farthest from the centroid): a vertex subset spread evenly over the
    surface, whatever the mesh density."""
    pts = points.detach().double()
    n = pts.shape[0]
    count = min(count, n)
    idx = torch.empty(count, dtype=torch.long, device=pts.device)
    idx[0] = ((pts - pts.mean(0)) ** 2).sum(1).argmax()
    d = ((pts - pts[idx[0]]) ** 2).sum(1)
    for i in range(1, count):
        idx[i] = d.argmax()
        d = torch.minimum(d, ((pts - pts[idx[i]]) ** 2).sum(1))
    return idx
