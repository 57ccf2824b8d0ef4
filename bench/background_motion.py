"""Synthetic camera-motion videos and a measure of how an image sequence's background moves.

Shared by the background benchmarks (bench/background.py, and the output-video checks):

- ``make_synthetic_video``: a textured background seen by a camera that pans, zooms and rolls by
  known homographies, with a person-shaped blob walking across it and its mask.
- ``measure_background_motion(frames, mask)``: each frame's background motion relative to the
  first frame, measured from the pixels alone (no tracker): frame 0 is warped by the motion
  predicted from the previous frame, blocks outside the mask are matched to the frame by phase
  correlation (sub-pixel), and a robust homography of the remaining displacement is fitted with
  the pack's camera fitter. Two rounds per frame; every frame is compared with frame 0 directly,
  so errors do not accumulate. The motion between consecutive frames must stay under about a
  quarter of ``block`` pixels.
- ``motion_error``: mean / max distance between two motions over a grid of frame-0 points.

Everything is numpy (torch only for bilinear warping); pixel centres are at integers,
homographies map frame-0 pixels to frame t. Use from another bench script next to it:
``import background_motion as bm`` (it imports the repository as ``marionette`` through common.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import common

common.import_pack()
from marionette.nodes.track import camera  # noqa: E402
from marionette.nodes.types import CameraMotion  # noqa: E402


# ------------------------------------------------------------------ sampling

def sample_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``img`` ``[H, W, ...]`` at float pixel positions (edge-extended outside)."""
    H, W = img.shape[:2]
    x = np.clip(x, 0, W - 1)
    y = np.clip(y, 0, H - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), W - 2) if W > 1 else np.zeros_like(x, np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2) if H > 1 else np.zeros_like(y, np.int64)
    fx, fy = x - x0, y - y0
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    a = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    b = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return a * (1 - fy) + b * fy


def warp(img: np.ndarray, H: np.ndarray, width: int, height: int):
    """``img`` (``[h, w]`` or ``[h, w, C]``) moved by ``H`` (its pixels → output pixels) onto a
    ``width`` × ``height`` frame, bilinear, edge-extended; returns the image and where its source
    lay inside ``img``."""
    import torch
    import torch.nn.functional as F

    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    src = camera.apply_homography(np.linalg.inv(H), np.stack([xs, ys], -1).reshape(-1, 2))
    u, v = src[:, 0].reshape(height, width), src[:, 1].reshape(height, width)
    inside = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    grid = torch.from_numpy(np.stack([(2 * u + 1) / w - 1, (2 * v + 1) / h - 1], -1)[None])
    x = torch.from_numpy(np.asarray(img, np.float64).reshape(h, w, -1)).permute(2, 0, 1)[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    out = out.permute(1, 2, 0).numpy()
    return (out[..., 0] if np.ndim(img) == 2 else out), inside


# ------------------------------------------------------------------ synthetic video

def make_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A ``[height, width, 3]`` background: smooth colour noise at several scales plus random
    rectangles and discs (corners and edges to track), in muted colours."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    for cell, amp in ((64, 0.35), (24, 0.2), (8, 0.12), (3, 0.06)):
        gh, gw = height // cell + 2, width // cell + 2
        g = rng.normal(0, 1, (gh, gw, 3))
        img += amp * sample_bilinear(g, xs / cell, ys / cell)
    for _ in range(int(width * height / 900)):
        c = rng.uniform(0.15, 0.75, 3) * np.array([0.7, 1.0, 1.0])  # little pure red: the person is red
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(3, 18)
        if rng.random() < 0.5:
            sel = (np.abs(xs - x0) < r) & (np.abs(ys - y0) < r * rng.uniform(0.4, 1.6))
        else:
            sel = (xs - x0) ** 2 + (ys - y0) ** 2 < r * r
        img[sel] = 0.5 * img[sel] + c
    img = 0.45 + 0.25 * (img - img.mean()) / img.std()
    return np.clip(img, 0.02, 0.98).astype(np.float32)


def camera_path(frames: int, width: int, height: int, pan=(40.0, -12.0), zoom: float = 1.15,
                roll_deg: float = 1.5, tilt: float = 0.03) -> np.ndarray:
    """``[frames, 3, 3]`` homographies frame 0 → frame t of a camera easing through a pan of
    ``pan`` pixels, a zoom by ``zoom`` about the image centre, a roll and a slight perspective
    ``tilt`` (fraction of scale change across the width)."""
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    Tc = np.array([[1, 0, c[0]], [0, 1, c[1]], [0, 0, 1.0]])
    out = []
    for t in range(frames):
        a = 0.5 - 0.5 * np.cos(np.pi * t / max(frames - 1, 1))  # ease in and out
        s, th = zoom ** a, np.deg2rad(roll_deg) * a
        R = np.eye(3)
        R[:2, :2] = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        P = np.eye(3)
        P[2, 0] = a * tilt / width  # about centre: w = 1 ± tilt / 2 across the frame
        pan_t = np.eye(3)
        pan_t[:2, 2] = a * np.asarray(pan, np.float64)
        out.append(pan_t @ Tc @ R @ P @ np.linalg.inv(Tc))
    return camera.compose(np.stack(out), camera.invert(out[0]))


def person_mask(width: int, height: int, cx: float, phase: float) -> np.ndarray:
    """A person-shaped blob (head, torso, swinging arms and legs) centred at ``cx``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = height / 10  # head radius-ish

    def ell(x0, y0, rx, ry):
        return ((xs - x0) / rx) ** 2 + ((ys - y0) / ry) ** 2 < 1

    top = 0.12 * height
    m = ell(cx, top + u, 0.8 * u, u)
    m |= ell(cx, top + 3.6 * u, 1.4 * u, 1.9 * u)
    sw = np.sin(phase)
    for side in (-1, 1):
        m |= ell(cx + side * (0.6 * u) + side * sw * 0.5 * u, top + 7.0 * u, 0.5 * u, 1.8 * u)
        m |= ell(cx + side * 1.7 * u - side * sw * 0.4 * u, top + 3.6 * u, 0.35 * u, 1.5 * u)
    return m


@dataclass
class SyntheticVideo:
    """frames ``[T, H, W, 3]`` float32 (background + person), background ``[T, H, W, 3]`` (no
    person), masks ``[T, H, W]`` bool (person), homographies ``[T, 3, 3]`` frame 0 → frame t,
    texture: the whole background canvas, canvas_from_frame0 (3×3)."""

    frames: np.ndarray
    background: np.ndarray
    masks: np.ndarray
    homographies: np.ndarray
    texture: np.ndarray
    canvas_from_frame0: np.ndarray
    width: int
    height: int


def make_synthetic_video(frames: int = 48, width: int = 320, height: int = 240, *, pan=(40.0, -12.0),
                         zoom: float = 1.15, roll_deg: float = 1.5, tilt: float = 0.03, person: bool = True,
                         seed: int = 0) -> SyntheticVideo:
    """A driving video whose camera moves by known homographies (``camera_path``) over a textured
    background, with a red person blob walking left to right (see ``SyntheticVideo``)."""
    Hs = camera_path(frames, width, height, pan, zoom, roll_deg, tilt)
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    seen = np.concatenate([camera.apply_homography(camera.invert(H), corners) for H in Hs])
    lo = np.floor(seen.min(0)) - 4
    hi = np.ceil(seen.max(0)) + 4
    C = np.array([[1, 0, -lo[0]], [0, 1, -lo[1]], [0, 0, 1.0]])  # frame 0 → canvas
    texture = make_texture(int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1, seed)
    bg = np.stack([warp(texture, camera.compose(H, np.linalg.inv(C)), width, height)[0] for H in Hs])
    masks = np.zeros((frames, height, width), bool)
    out = bg.copy()
    if person:
        ys = np.mgrid[0:height, 0:width][0] / height
        colour = np.stack([0.85 - 0.2 * ys, 0.12 + 0.05 * ys, 0.18 + 0.0 * ys], -1)
        for t in range(frames):
            cx = width * (0.35 + 0.3 * t / max(frames - 1, 1))
            masks[t] = person_mask(width, height, cx, 0.5 * t)
            out[t][masks[t]] = colour[masks[t]]
    return SyntheticVideo(frames=out.astype(np.float32), background=bg.astype(np.float32), masks=masks,
                          homographies=Hs, texture=texture, canvas_from_frame0=C, width=width, height=height)


# ------------------------------------------------------------------ measuring motion

def _gray(frames) -> np.ndarray:
    a = np.asarray(frames.detach().cpu().numpy() if hasattr(frames, "detach") else frames, np.float64)
    return a @ np.array([0.299, 0.587, 0.114]) if a.shape[-1] == 3 else a


def _phase_shifts(a: np.ndarray, b: np.ndarray):
    """Sub-pixel shifts ``s`` with ``a(x) ≈ b(x - s)`` for ``[n, B, B]`` block pairs, and the
    correlation peak (1 = identical up to the shift)."""
    n, B, _ = a.shape
    win = np.outer(np.hanning(B), np.hanning(B))
    fa = np.fft.fft2((a - a.mean((1, 2), keepdims=True)) * win)
    fb = np.fft.fft2((b - b.mean((1, 2), keepdims=True)) * win)
    r = fa * np.conj(fb)
    r /= np.abs(r) + 1e-12
    corr = np.real(np.fft.ifft2(r))
    flat = corr.reshape(n, -1).argmax(1)
    py, px = np.unravel_index(flat, (B, B))
    peak = corr[np.arange(n), py, px]

    def refine(c_m, c_0, c_p):  # parabola through the peak and its neighbours
        den = c_m - 2 * c_0 + c_p
        return np.where(np.abs(den) > 1e-12, 0.5 * (c_m - c_p) / den, 0.0)

    idx = np.arange(n)
    dx = refine(corr[idx, py, (px - 1) % B], peak, corr[idx, py, (px + 1) % B])
    dy = refine(corr[idx, (py - 1) % B, px], peak, corr[idx, (py + 1) % B, px])
    sx = (px + B // 2) % B - B // 2 + dx
    sy = (py + B // 2) % B - B // 2 + dy
    return np.stack([sx, sy], 1), peak


def measure_background_motion(frames, mask=None, *, block: int = 32, stride: int = 16, rounds: int = 2,
                              max_model: str = "homography", threshold: float = 1.0, min_texture: float = 0.02,
                              min_peak: float = 0.15, seed: int = 0) -> CameraMotion:
    """Background motion of ``frames`` (``[T, H, W, 3]`` or ``[T, H, W]``, numpy or torch)
    relative to the first frame, measured outside ``mask`` (``[H, W]`` or ``[T, H, W]``, True /
    > 0.5 = not background: the person, invalid plate pixels).

    block/stride: matched block size and spacing, pixels. rounds: warp-and-match rounds per frame.
    threshold:    inlier distance of the homography fit, pixels.
    min_texture:  blocks flatter than this grey-level standard deviation are skipped.
    min_peak:     blocks whose phase-correlation peak is lower are skipped (no clear match).
    Returns a ``CameraMotion`` (``inliers``: blocks that agreed, ``residual``: their mean error).
    """
    g = _gray(frames)
    T, Hh, W = g.shape
    if mask is None:
        m = np.zeros((T, Hh, W), bool)
    else:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
        m = np.broadcast_to(m > 0.5 if m.dtype != bool else m, (T, Hh, W))
    r = block // 2
    cy, cx = np.mgrid[r:Hh - r + 1:stride, r:W - r + 1:stride]
    centres = np.stack([cx.ravel(), cy.ravel()], 1)  # block covers [c - r, c + r)
    oy, ox = np.mgrid[-r:r, -r:r]
    rows = centres[:, 1, None, None] + oy
    cols = centres[:, 0, None, None] + ox
    Hs = np.tile(np.eye(3), (T, 1, 1))
    models, inliers, residual = ["identity"] * T, np.zeros(T, np.int64), np.full(T, np.nan)
    models[0], residual[0] = "homography", 0.0
    inliers[0] = len(centres)
    keep0 = ~m[0]
    for t in range(1, T):
        H = Hs[t - 1].copy()
        for k in range(rounds):
            both, inside = warp(np.stack([g[0], keep0], -1), H, W, Hh)
            w0, wk = both[..., 0], both[..., 1]
            bad = m[t] | (wk < 0.999) | ~inside
            a, b = g[t][rows, cols], w0[rows, cols]
            use = ~bad[rows, cols].any((1, 2)) & (a.std((1, 2)) > min_texture) & (b.std((1, 2)) > min_texture)
            if use.sum() == 0:
                break
            s, peak = _phase_shifts(a[use], b[use])
            ok = peak > min_peak
            dst = centres[use][ok].astype(np.float64)
            src = dst - s[ok]  # where each block's content sits in the warped frame 0
            fit = camera.fit_motion(src, dst, W, Hh, max_model=max_model, threshold=threshold, seed=[seed, t, k])
            if fit.model == "identity":
                break
            H = camera.normalize(fit.H @ H)
            models[t], inliers[t], residual[t] = fit.model, int(fit.inliers.sum()), fit.residual
        Hs[t] = H
    return CameraMotion(homographies=Hs, models=tuple(models), inliers=inliers, residual=residual,
                        width=W, height=Hh)


def motion_error(H_est: np.ndarray, H_true: np.ndarray, width: int, height: int, grid: int = 9,
                 where: np.ndarray | None = None) -> np.ndarray:
    """Per-frame mean distance (pixels) between where ``H_est`` and ``H_true`` send a ``grid`` ×
    ``grid`` lattice of frame-0 pixels (``where``: optional bool mask of frame-0 pixels to keep)."""
    xs, ys = np.meshgrid(np.linspace(0, width - 1, grid), np.linspace(0, height - 1, grid))
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    if where is not None:
        pts = pts[where[np.round(pts[:, 1]).astype(int), np.round(pts[:, 0]).astype(int)]]
    T = len(H_est)
    a = camera.apply_homography(np.asarray(H_est), np.broadcast_to(pts, (T,) + pts.shape))
    b = camera.apply_homography(np.asarray(H_true), np.broadcast_to(pts, (T,) + pts.shape))
    return np.linalg.norm(a - b, axis=-1).mean(1)



def align_to_first(frames, mask=None, iters=30, levels=(4, 2, 1)) -> np.ndarray:
    """Direct (photometric) alignment of every frame to frame 0 outside ``mask`` (True = not
    background): ``[T, 3, 3]`` homographies H_t with frame_t(H_t x) ~ frame_0(x) in pixels, found
    by LBFGS on the mean squared grey-level difference, coarse to fine, each frame starting from
    the previous one's. For smooth images (e.g. decoded from 8x8 latent cells), where
    ``measure_background_motion``'s block phase correlation locks onto the cell grid instead."""
    import torch
    import torch.nn.functional as F

    g = torch.as_tensor(np.asarray(frames, np.float32))
    if g.shape[-1] == 3:
        g = g @ torch.tensor([0.299, 0.587, 0.114])
    T, H, W = g.shape
    m = torch.zeros(T, H, W, dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask)).bool()
    if m.ndim == 2:
        m = m.expand(T, H, W)
    # normalised coords in [-1,1] (align_corners=True: pixel centres at integers)
    S = torch.tensor([[2.0 / (W - 1), 0, -1], [0, 2.0 / (H - 1), -1], [0, 0, 1]], dtype=torch.float64)
    out = [np.eye(3)]
    p = torch.zeros(8, dtype=torch.float64)
    for t in range(1, T):
        for lv in levels:
            h, w = H // lv, W // lv
            i0 = F.avg_pool2d(g[0][None, None], lv) if lv > 1 else g[0][None, None]
            it = F.avg_pool2d(g[t][None, None], lv) if lv > 1 else g[t][None, None]
            ok = ~(F.max_pool2d(m[0][None, None].float(), lv) > 0 if lv > 1 else m[0][None, None])
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).double()
            mt = F.max_pool2d(m[t][None, None].float(), lv) if lv > 1 else m[t][None, None].float()
            p = p.detach().requires_grad_(True)
            opt = torch.optim.LBFGS([p], max_iter=iters, line_search_fn="strong_wolfe")
            def closure():
                opt.zero_grad()
                Hn = torch.cat([p, torch.zeros(1, dtype=p.dtype)]).view(3, 3) + torch.eye(3, dtype=p.dtype)
                q = pts @ Hn.T
                q = (q[..., :2] / q[..., 2:]).float()[None]
                warped = F.grid_sample(it, q, align_corners=True, padding_mode="border")
                wm = F.grid_sample(mt, q, align_corners=True) < 0.5
                inside = (q.abs() <= 1).all(-1)[:, None]
                sel = ok & wm & inside
                loss = ((warped - i0) ** 2)[sel].mean()
                loss.backward()
                return loss
            opt.step(closure)
        Hn = (torch.cat([p.detach(), torch.zeros(1, dtype=p.dtype)]).view(3, 3) + torch.eye(3, dtype=p.dtype))
        out.append((torch.linalg.inv(S) @ Hn @ S).numpy())
    return np.stack(out)
