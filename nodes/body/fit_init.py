"""Initialisation of the body fitter: where the body is (camera-space translation) and which way
it faces (global orientation), per frame, from the torso and head keypoints alone.

1. Depth from the torso's pixel size: for each pair of torso points seen in a frame (shoulders,
   hips, neck-to-hips, shoulder-to-hip sides, nose-to-neck), ``z = f · L3D / L2D`` with ``L3D``
   the neutral body's length; the smallest ``z`` (the least foreshortened segment) wins.
   Foreshortening only makes the body look farther, so a low quantile over ``window`` frames
   either side is kept (robust to a single wrong detection); frames without a torso take their neighbours' values.
2. Orientation: a rigid fit of the neutral body's torso and head points, started from 8
   headings (every 45° about the vertical: front, profiles, back) for every frame at once.
3. Choice: per frame the heading with the lowest reprojection error, chosen jointly over the
   sequence (Viterbi) with a cost on turning between frames, so a profile view, where front and
   back explain the torso equally well, follows its neighbours.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .fit_terms import HEAD, TORSO
from .geometry import aa_to_matrix, project, rotation_about_y, rotation_angle
from .silhouette import geman_mcclure

_PAIRS = ((2, 5), (8, 11), (1, "hips"), (2, 8), (5, 11), (0, 1))


def _point(kp: np.ndarray, i):
    """A 2D/3D point of ``kp`` ``[..., 134, D]`` by index, or the mid-hip for ``"hips"``."""
    if i == "hips":
        return 0.5 * (kp[..., 8, :] + kp[..., 11, :])
    return kp[..., i, :]


def _seen(ok: np.ndarray, i):
    return (ok[..., 8] & ok[..., 11]) if i == "hips" else ok[..., i]


def _fill_gaps(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where ``known`` is False (nearest value at the ends)."""
    t = np.arange(len(values))
    if not known.any():
        return values
    out = values.copy()
    for d in range(values.shape[1]) if values.ndim > 1 else [None]:
        col = out if d is None else out[:, d]
        col[~known] = np.interp(t[~known], t[known], col[known])
    return out


def initial_translation(neutral: np.ndarray, kps: np.ndarray, ok: np.ndarray, K: np.ndarray,
                        width: int, height: int, window: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame translation ``[T, 3]`` (metres) of the neutral body (``neutral`` ``[134, 3]``,
    canonical, pelvis at the origin) and a ``[T]`` bool of frames where a torso was seen.

    ``kps`` ``[T, 134, 2]`` pixels, ``ok`` ``[T, 134]`` usable points, ``K`` ``[3, 3]``."""
    T = kps.shape[0]
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    depth = np.full(T, np.inf)
    for a, b in _PAIRS:
        L3 = np.linalg.norm(_point(neutral, a) - _point(neutral, b))
        seen = _seen(ok, a) & _seen(ok, b)
        L2 = np.linalg.norm(_point(kps, a) - _point(kps, b), axis=-1)
        z = np.where(seen & (L2 > 2.0), f * L3 / np.maximum(L2, 1e-6), np.inf)
        depth = np.minimum(depth, z)
    known = np.isfinite(depth)
    if known.any():
        # foreshortening only ever makes a segment look shorter (the body farther): the lower
        # envelope over a few neighbouring frames discards a profile frame's narrow shoulders
        raw = np.where(known, depth, np.nan)
        for t in np.flatnonzero(known):
            near = raw[max(0, t - window):t + window + 1]
            near = near[np.isfinite(near)]
            # a low quantile rather than the minimum: one frame with a spurious large torso
            # (a wrong detection) must not pull its neighbours toward the camera
            depth[t] = min(depth[t], float(np.quantile(near, 0.25))) if len(near) >= 4 else depth[t]
    if not known.any():
        # no torso anywhere: size the body by the spread of whatever points are seen
        any_ok = ok.any(1)
        ext3 = np.ptp(neutral[:, 1][np.abs(neutral).sum(1) > 0])
        spans = [np.ptp(kps[t, ok[t], 1]) if ok[t].sum() >= 2 else np.nan for t in range(T)]
        spans = np.asarray(spans, float)
        good = any_ok & np.isfinite(spans) & (spans > 4)
        depth = np.where(good, f * ext3 / np.where(good, spans, 1.0), np.nan)
        known = good
        if not known.any():
            depth = np.full(T, f * ext3 / (0.8 * height))
            known = np.ones(T, bool)
    depth = _fill_gaps(np.where(known, depth, 0.0), known)
    # centre: the torso (else all seen points) centroid against the neutral body's
    transl = np.zeros((T, 3))
    centre_known = np.zeros(T, bool)
    for t in range(T):
        idx = [i for i in TORSO + HEAD if ok[t, i]] or list(np.flatnonzero(ok[t]))
        if not idx:
            continue
        uv = kps[t, idx].mean(0)
        c3 = neutral[idx].mean(0)
        z = depth[t]
        transl[t] = [(uv[0] - cx) / f * z - c3[0], (uv[1] - cy) / f * z - c3[1], z]
        centre_known[t] = True
    if not centre_known.any():
        transl[:, 2] = depth
        centre_known[:] = True
    transl = _fill_gaps(transl, centre_known)
    return transl, known


def initial_orientation(neutral: np.ndarray, kps: np.ndarray, conf: np.ndarray, ok: np.ndarray,
                        K: np.ndarray, transl0: np.ndarray, scale: float, sigma: float,
                        iters: int = 60, headings: int = 8, turn_cost: float = 40.0,
                        device=None, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame rotation ``[T, 3, 3]`` and translation ``[T, 3]`` of the neutral body from a
    rigid, multi-start fit of the torso and head points (see the module docstring).

    ``turn_cost`` weighs the squared turn between frames (radians²) against the per-frame
    reprojection energy (normalised px²) in the sequence-level choice."""
    T = kps.shape[0]
    C = headings
    idx = TORSO + HEAD
    w_np = np.where(ok[:, idx], conf[:, idx] ** 2, 0.0) * np.array([1.0] * len(TORSO) + [0.5] * len(HEAD))
    dev = device or torch.device("cpu")
    X0 = torch.as_tensor(neutral[idx], dtype=dtype, device=dev)  # [N, 3]
    target = torch.as_tensor(kps[:, idx], dtype=dtype, device=dev)[:, None].expand(T, C, -1, -1)
    w = torch.as_tensor(w_np, dtype=dtype, device=dev)[:, None].expand(T, C, -1)
    Kt = torch.as_tensor(K, dtype=dtype, device=dev)
    yaw = torch.arange(C, dtype=dtype, device=dev) * (2 * math.pi / C)
    R0 = rotation_about_y(yaw, dtype=dtype, device=dev)[None].expand(T, C, 3, 3)
    z0 = torch.as_tensor(transl0[:, 2], dtype=dtype, device=dev)
    delta = torch.zeros(T, C, 3, dtype=dtype, device=dev, requires_grad=True)
    trans = torch.as_tensor(transl0, dtype=dtype, device=dev)[:, None].repeat(1, C, 1).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [delta], "lr": 0.05}, {"params": [trans], "lr": 0.02}])

    def energy():
        R = R0 @ aa_to_matrix(delta)
        X = X0 @ R.transpose(-1, -2) + trans[:, :, None]
        r = (project(X, Kt) - target) / scale
        e = (w * geman_mcclure((r * r).sum(-1), sigma)).sum(-1) / max(len(TORSO), 1)
        depth_prior = 10.0 * ((trans[..., 2] - z0[:, None]) / z0[:, None]) ** 2
        return e + depth_prior, R

    for _ in range(iters):
        opt.zero_grad()
        e, _ = energy()
        e.sum().backward()
        opt.step()
    with torch.no_grad():
        e, R = energy()
    cost = e.cpu().double().numpy()
    has = w_np.sum(1) > 0
    cost[~has] = 0.0  # no torso: any heading, continuity decides
    # Viterbi over headings with a turning cost
    Rn = R.cpu().double()
    back = np.zeros((T, C), np.int64)
    acc = cost[0].copy()
    for t in range(1, T):
        turn = rotation_angle(Rn[t - 1][:, None], Rn[t][None]).numpy() ** 2  # [C_prev, C]
        tot = acc[:, None] + turn_cost * turn
        back[t] = tot.argmin(0)
        acc = tot.min(0) + cost[t]
    path = np.zeros(T, np.int64)
    path[-1] = int(acc.argmin())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    pick = torch.as_tensor(path)
    frames = torch.arange(T)
    return Rn[frames, pick].numpy(), trans.detach().cpu().double()[frames, pick].numpy()


def local_quadratic(values: np.ndarray, weights: np.ndarray, sigma_frames: float,
                    radius: int | None = None, fill: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Temporal local-quadratic regression (a Savitzky–Golay filter with Gaussian weights of
    ``sigma_frames`` within ``radius`` frames, and per-sample ``weights``) of tracks ``values``
    ``[T, N, C]``. Returns the smoothed tracks and ``[T, N]`` where the fit was possible (the
    sample itself weighted — unless ``fill``, which also estimates unweighted samples from
    their neighbours —, at least 5 weighted samples, a well-posed system); elsewhere the input
    is returned unchanged. A quadratic follows accelerating motion without lag."""
    T = values.shape[0]
    radius = radius or max(2, int(round(2.5 * sigma_frames)))
    offs = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (offs / sigma_frames) ** 2)
    frames = np.arange(T)[:, None] + offs[None]
    idx = np.clip(frames, 0, T - 1)  # [T, W]
    w = weights[idx] * (g * ((frames >= 0) & (frames < T)))[:, :, None]  # [T, W, N]
    A = np.stack([np.ones_like(offs), offs, offs ** 2], -1).astype(np.float64)  # [W, 3]
    AtWA = np.einsum("wi,twn,wj->tnij", A, w, A)  # [T, N, 3, 3]
    AtWb = np.einsum("wi,twn,twnc->tnic", A, w, values[idx])  # [T, N, 3, C]
    det = np.linalg.det(AtWA)
    good = ((fill | (weights > 0)) & ((w > 0).sum(1) >= 5)
            & (np.abs(det) > 1e-6 * np.maximum(AtWA[..., 0, 0], 1e-12) ** 3))
    out = values.astype(np.float64).copy()
    if good.any():
        out[good] = np.linalg.solve(AtWA[good] + 1e-9 * np.eye(3), AtWb[good])[:, 0]
    return out, good


def smooth_keypoints(kps: np.ndarray, min_conf: float, sigma_frames: float, radius: int | None = None,
                     keep_beyond: float = np.inf) -> np.ndarray:
    """Temporal denoising of keypoint tracks ``[T, 134, 3]`` before fitting: every present
    point is replaced by a local quadratic fitted to its own track (``local_quadratic``,
    weighted by the scores, missing frames left out), which removes detector jitter but not
    motion. Missing points stay missing (gaps are bridged by the fitter's smoothness terms).
    Where the fit moves a point by more than ``keep_beyond`` pixels the motion is too abrupt
    for the window and the raw point is kept."""
    if sigma_frames <= 0 or kps.shape[0] < 5:
        return kps
    conf = np.where(kps[..., 2] >= min_conf, kps[..., 2], 0.0)
    sm, good = local_quadratic(kps[..., :2], conf, sigma_frames, radius)
    far = np.linalg.norm(sm - kps[..., :2], axis=-1) > keep_beyond
    out = kps.copy()
    out[..., :2] = np.where((good & ~far)[..., None], sm, kps[..., :2])
    return out
