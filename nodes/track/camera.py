"""Camera motion from background point tracks: one homography per frame, relative to frame 0.

Plain numpy, no ComfyUI. Input: ``PointTracks`` (points outside the person, from CoTracker);
output: ``CameraMotion`` (``homographies[t]`` maps a frame-0 pixel to frame t, pixel centres at
integers).

How it works:

1. **Anchors.** Every track gets an *anchor*: where its point sits in frame 0's coordinates.
   Tracks visible in frame 0 start there; a track that starts later (re-queried in a later
   chunk, or a point the camera pans onto) is carried back to frame 0 through the motion of the
   first frame it is seen in. So every frame is fitted against frame 0 directly, through all the
   points it shares with *any* earlier frame, and a chain of frame-to-frame fits (which drifts)
   is only used where no shared point is left.
2. **Sequential pass.** Frame t is predicted with frame t-1's motion; the correction from the
   predicted anchor positions to the tracked positions is fitted robustly (``fit_motion``):
   seeded RANSAC over minimal samples (MSAC score), then least squares on the inliers
   (normalised DLT then Gauss-Newton on the reprojection error for homographies). Fitting a
   near-identity correction keeps the fallbacks meaningful: when points get few, the
   homography falls back to affine, similarity, translation, and with no point at all to
   identity (the previous frame's motion is kept). A homography is also refused when its
   inliers span too small a part of the image, or it folds, flips or rescales the frame
   implausibly between two frames.
3. **Refinement passes.** Anchors become the mean of their frame-0 back-projections over every
   frame where they were inliers (averaging the tracker's noise); tracks that were outliers in
   many of their frames (slid onto the person, drifting) are dropped, since near the threshold
   they would still bias the fits; every frame is refitted against the anchors, and the result
   is re-expressed relative to frame 0 (``H_t ← H_t · H_0⁻¹``).

Helpers rescale a motion to another image size (``rescale_motion``), invert and compose
homographies and express the motion relative to another frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..types import CameraMotion, PointTracks

MODELS = ("homography", "affine", "similarity", "translation", "identity")
# Points needed before a model is tried (more than its minimal sample, so RANSAC can reject
# outliers); below every count the frame keeps the previous frame's motion ("identity").
MIN_POINTS = {"homography": 8, "affine": 5, "similarity": 2, "translation": 1}
_MINIMAL = {"homography": 4, "affine": 3, "similarity": 2, "translation": 1}


@dataclass
class MotionFit:
    """One robust fit: ``H`` (3×3, maps ``src`` to ``dst``), the model used, the inlier mask over
    the points and the mean inlier reprojection error in pixels."""

    H: np.ndarray
    model: str
    inliers: np.ndarray
    residual: float


# ------------------------------------------------------------------ homography helpers

def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``pts`` ``[..., N, 2]`` mapped by ``H`` (3×3, or ``[..., 3, 3]`` broadcast against the
    points' leading dimensions)."""
    pts = np.asarray(pts, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)[..., None, :, :]  # broadcast over the points
    x, y = pts[..., 0], pts[..., 1]
    w = H[..., 2, 0] * x + H[..., 2, 1] * y + H[..., 2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([(H[..., 0, 0] * x + H[..., 0, 1] * y + H[..., 0, 2]) / w,
                         (H[..., 1, 0] * x + H[..., 1, 1] * y + H[..., 1, 2]) / w], -1)


def normalize(H: np.ndarray) -> np.ndarray:
    """``H`` scaled so that ``H[2, 2] == 1`` (batched)."""
    H = np.asarray(H, dtype=np.float64)
    return H / H[..., 2:3, 2:3]


def invert(H: np.ndarray) -> np.ndarray:
    """Inverse homography/homographies, normalised (``[..., 3, 3]``)."""
    return normalize(np.linalg.inv(np.asarray(H, dtype=np.float64)))


def compose(*Hs: np.ndarray) -> np.ndarray:
    """``compose(A, B, C)`` = A·B·C: apply C, then B, then A (batched, normalised)."""
    out = np.asarray(Hs[-1], dtype=np.float64)
    for H in reversed(Hs[:-1]):
        out = np.asarray(H, dtype=np.float64) @ out
    return normalize(out)


def scale_matrix(src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Maps pixels of a ``src_size`` (w, h) image to the same spot of a ``dst_size`` image with
    pixel centres at integers: ``u' = s (u + 0.5) - 0.5``."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=np.float64)


def rescale_homographies(H: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Homographies between pixels of ``src_size`` images re-expressed for ``dst_size`` images."""
    S = scale_matrix(src_size, dst_size)
    return compose(S, H, np.linalg.inv(S))


def rescale_motion(motion: CameraMotion, width: int, height: int) -> CameraMotion:
    """``motion`` for frames of ``width`` × ``height`` pixels (e.g. the reference image's size)."""
    H = rescale_homographies(motion.homographies, (motion.width, motion.height), (width, height))
    scale = np.sqrt(width * height / (motion.width * motion.height))
    return CameraMotion(homographies=H, models=tuple(motion.models), inliers=np.asarray(motion.inliers).copy(),
                        residual=np.asarray(motion.residual, dtype=np.float64) * scale,
                        width=int(width), height=int(height))


def relative_homography(motion: CameraMotion, src_frame: int, dst_frame: int) -> np.ndarray:
    """The homography mapping pixels of frame ``src_frame`` to frame ``dst_frame``."""
    H = motion.homographies
    return compose(H[dst_frame], invert(H[src_frame]))


def rebase_motion(motion: CameraMotion, frame: int) -> CameraMotion:
    """``motion`` relative to ``frame`` instead of frame 0 (when the reference image matches
    another frame of the video)."""
    H = compose(motion.homographies, invert(motion.homographies[frame]))
    return CameraMotion(homographies=H, models=tuple(motion.models), inliers=np.asarray(motion.inliers).copy(),
                        residual=np.asarray(motion.residual).copy(), width=motion.width, height=motion.height)


# ------------------------------------------------------------------ model fits (least squares)

def _hartley(pts: np.ndarray) -> np.ndarray:
    """Similarity moving ``pts`` to mean 0 and mean distance √2 (normalised DLT)."""
    c = pts.mean(0)
    d = np.sqrt(((pts - c) ** 2).sum(1)).mean()
    s = np.sqrt(2) / max(d, 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])


def _dlt_rows(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """DLT equations ``A h = 0`` for ``[..., n, 2]`` correspondences → ``[..., 2n, 9]``."""
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    o, z = np.ones_like(x), np.zeros_like(x)
    r1 = np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], -1)
    r2 = np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], -1)
    return np.concatenate([r1, r2], -2)


def _fit_homography_ls(src, dst, H0=None, iters: int = 10):
    """Normalised DLT on all points, then Levenberg-Marquardt on the transfer error
    ``|H src - dst|²`` (the DLT minimises an algebraic error that weights points unevenly)."""
    Ts, Td = _hartley(src), _hartley(dst)
    s, d = apply_homography(Ts, src), apply_homography(Td, dst)
    if H0 is None:
        _, _, vt = np.linalg.svd(_dlt_rows(s, d))
        Hn = vt[-1].reshape(3, 3)
    else:
        Hn = Td @ H0 @ np.linalg.inv(Ts)
    if abs(Hn[2, 2]) < 1e-12:
        return None
    Hn = Hn / Hn[2, 2]

    def residual(h):
        p = apply_homography(np.append(h, 1).reshape(3, 3), s)
        return (p - d).ravel()

    h, lam = Hn.ravel()[:8].copy(), 1e-3
    r = residual(h)
    cost = r @ r
    x, y = s[:, 0], s[:, 1]
    for _ in range(iters):
        Hm = np.append(h, 1).reshape(3, 3)
        w = Hm[2, 0] * x + Hm[2, 1] * y + 1
        if np.any(np.abs(w) < 1e-9) or not np.isfinite(cost):
            break
        px = (Hm[0, 0] * x + Hm[0, 1] * y + Hm[0, 2]) / w
        py = (Hm[1, 0] * x + Hm[1, 1] * y + Hm[1, 2]) / w
        J = np.zeros((len(x), 2, 8))
        J[:, 0, 0:3] = np.stack([x, y, np.ones_like(x)], 1) / w[:, None]
        J[:, 1, 3:6] = J[:, 0, 0:3]
        J[:, 0, 6:8] = -px[:, None] * np.stack([x, y], 1) / w[:, None]
        J[:, 1, 6:8] = -py[:, None] * np.stack([x, y], 1) / w[:, None]
        J = J.reshape(-1, 8)
        A, g = J.T @ J, J.T @ r
        improved = False
        for _ in range(6):
            try:
                step = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), -g)
            except np.linalg.LinAlgError:
                break
            r_new = residual(h + step)
            c_new = r_new @ r_new
            if np.isfinite(c_new) and c_new < cost:
                h, r, improved = h + step, r_new, True
                lam = max(lam / 10, 1e-9)
                done = cost - c_new < 1e-12 * max(cost, 1e-30)
                cost = c_new
                break
            lam *= 10
        if not improved or done:
            break
    Hn = np.append(h, 1).reshape(3, 3)
    H = np.linalg.inv(Td) @ Hn @ Ts
    return H / H[2, 2] if np.isfinite(H).all() and abs(H[2, 2]) > 1e-12 else None


def _fit_affine_ls(src, dst):
    A = np.concatenate([src, np.ones((len(src), 1))], 1)
    sol, *_ = np.linalg.lstsq(A, dst, rcond=None)
    return np.vstack([sol.T, [0, 0, 1]])


def _fit_similarity_ls(src, dst):
    z = src[:, 0] + 1j * src[:, 1]
    w = dst[:, 0] + 1j * dst[:, 1]
    zc, wc = z.mean(), w.mean()
    den = (np.abs(z - zc) ** 2).sum()
    a = ((w - wc) * np.conj(z - zc)).sum() / den if den > 1e-12 else 1.0
    b = wc - a * zc
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0, 0, 1]])


def _fit_translation_ls(src, dst):
    d = (dst - src).mean(0)
    return np.array([[1, 0, d[0]], [0, 1, d[1]], [0, 0, 1.0]])


def fit_model(model: str, src: np.ndarray, dst: np.ndarray, H0: np.ndarray | None = None):
    """Least-squares ``model`` mapping ``src`` → ``dst`` (``[n, 2]`` each), or None when degenerate."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if len(src) < _MINIMAL[model]:
        return None
    if model == "homography":
        return _fit_homography_ls(src, dst, H0)
    if model == "affine":
        if np.linalg.matrix_rank(np.concatenate([src, np.ones((len(src), 1))], 1), tol=1e-6) < 3:
            return None
        return _fit_affine_ls(src, dst)
    if model == "similarity":
        return _fit_similarity_ls(src, dst) if np.ptp(src, 0).max() > 1e-6 else None
    return _fit_translation_ls(src, dst)


# ------------------------------------------------------------------ minimal samples (batched)

def _minimal_fits(model: str, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Hypotheses from minimal samples ``[B, k, 2]`` → ``[B, 3, 3]`` (degenerate ones are NaN)."""
    B = len(src)
    if model == "translation":
        H = np.tile(np.eye(3), (B, 1, 1))
        H[:, :2, 2] = dst[:, 0] - src[:, 0]
        return H
    if model == "similarity":
        z = src[..., 0] + 1j * src[..., 1]
        w = dst[..., 0] + 1j * dst[..., 1]
        dz = z[:, 0] - z[:, 1]
        ok = np.abs(dz) > 1e-6
        a = np.where(ok, (w[:, 0] - w[:, 1]) / np.where(ok, dz, 1), np.nan)
        b = w[:, 0] - a * z[:, 0]
        H = np.zeros((B, 3, 3))
        H[:, 0, 0], H[:, 0, 1], H[:, 0, 2] = a.real, -a.imag, b.real
        H[:, 1, 0], H[:, 1, 1], H[:, 1, 2] = a.imag, a.real, b.imag
        H[:, 2, 2] = 1
        return H
    if model == "affine":
        P = np.concatenate([src, np.ones((B, 3, 1))], 2)  # [B,3,3]
        det = np.linalg.det(P)
        ok = np.abs(det) > 1e-6 * (np.abs(P).max((1, 2)) ** 2 + 1)
        P[~ok] = np.eye(3)
        sol = np.linalg.solve(P, dst)  # [B,3,2]
        H = np.zeros((B, 3, 3))
        H[:, :2, :] = np.swapaxes(sol, 1, 2)
        H[:, 2, 2] = 1
        H[~ok] = np.nan
        return H
    # Homography from 4 points with h33 = 1: an 8×8 solve per sample (much faster than an SVD;
    # samples that map the normalised origin to infinity are negligible and dropped).
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    o, z = np.ones_like(x), np.zeros_like(x)
    A = np.concatenate([np.stack([x, y, o, z, z, z, -u * x, -u * y], -1),
                        np.stack([z, z, z, x, y, o, -v * x, -v * y], -1)], 1)  # [B, 8, 8]
    b = np.concatenate([u, v], 1)
    det = np.abs(np.linalg.det(A))
    ok = np.isfinite(det) & (det > 1e-10)
    A[~ok] = np.eye(8)
    h = np.linalg.solve(A, b[..., None])[..., 0]
    H = np.concatenate([h, np.ones((B, 1))], 1).reshape(B, 3, 3)
    H[~ok] = np.nan
    return H


def _transfer_errors(H: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``[B, n]`` distances ``|H src - dst|``; inf where a point maps behind the camera."""
    p = np.concatenate([src, np.ones((len(src), 1))], 1) @ np.swapaxes(H, 1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.sqrt(((p[..., :2] / p[..., 2:3] - dst) ** 2).sum(-1))
    bad = ~np.isfinite(e) | (p[..., 2] <= 1e-9)
    e[bad] = np.inf
    return e


def _errors(H, src, dst):
    return _transfer_errors(H[None], src, dst)[0]


# ------------------------------------------------------------------ robust fit with fallbacks

def _plausible(model: str, H: np.ndarray, width: int, height: int, max_scale: float, max_perspective: float) -> bool:
    """Rejects fits that fold, mirror, over-scale or tilt the frame beyond what a camera does
    between two frames."""
    if H is None or not np.isfinite(H).all():
        return False
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    w = H[2, 0] * corners[:, 0] + H[2, 1] * corners[:, 1] + H[2, 2]
    if (w <= 0).any() or w.max() / w.min() > max_perspective:
        return False
    q = apply_homography(H, corners)
    e = np.roll(q, -1, 0) - q
    cross = e[:, 0] * np.roll(e, -1, 0)[:, 1] - e[:, 1] * np.roll(e, -1, 0)[:, 0]
    if (cross <= 0).any():  # folded or mirrored quad (image y points down: clockwise is positive)
        return False
    area = 0.5 * np.abs((q[:, 0] * np.roll(q[:, 1], -1) - np.roll(q[:, 0], -1) * q[:, 1]).sum())
    ratio = area / float((width - 1) * (height - 1) or 1)
    if not (1 / max_scale ** 2 <= ratio <= max_scale ** 2):
        return False
    if model in ("homography", "affine"):
        s = np.linalg.svd(H[:2, :2] / w.mean(), compute_uv=False)
        if s[1] <= 0 or s[0] / s[1] > max_scale:  # strong shear/anisotropy
            return False
    return True


def _spread(pts: np.ndarray) -> float:
    """Standard deviation of ``pts`` along their narrowest direction, pixels."""
    if len(pts) < 3:
        return 0.0
    return float(np.sqrt(max(np.linalg.eigvalsh(np.cov(pts.T))[0], 0.0)))


def fit_motion(src: np.ndarray, dst: np.ndarray, width: int, height: int, *, max_model: str = "homography",
               threshold: float = 3.0, iterations: int = 256, seed=0, min_spread: float = 0.05,
               min_inlier_ratio: float = 0.25, score_points: int = 400, max_scale: float = 2.0,
               max_perspective: float = 1.5) -> MotionFit:
    """Robust motion mapping ``src`` to ``dst`` (``[n, 2]`` pixels in a ``width`` × ``height``
    frame): the richest model from ``max_model`` down that has enough inliers, spread over enough
    of the frame (``min_spread`` × the shorter side, half that for affine) and passes the
    plausibility checks. Identity (model ``"identity"``) when nothing fits.

    threshold:  inlier distance in pixels. iterations: RANSAC hypotheses per model.
    min_inlier_ratio: a fit that fewer of the points agree with is not trusted.
    score_points: RANSAC samples and scores hypotheses on at most this many of the points.
    seed:       seeds the samples (an int or a sequence of ints); same inputs, same result.
    """
    if max_model not in MODELS:
        raise ValueError(f"max_model '{max_model}' is not one of {MODELS}")
    src, dst = np.asarray(src, np.float64).reshape(-1, 2), np.asarray(dst, np.float64).reshape(-1, 2)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[ok], dst[ok]
    n = len(src)
    rng = np.random.default_rng(seed)
    full_inliers = np.zeros(len(ok), bool)
    side = min(width, height)
    for model in MODELS[MODELS.index(max_model):-1]:
        if n < MIN_POINTS[model]:
            continue
        k = _MINIMAL[model]
        need_spread = {"homography": min_spread, "affine": 0.5 * min_spread}.get(model, 0.0) * side
        if _spread(dst) < need_spread:
            continue
        # Hypotheses from random minimal samples (duplicates dropped), drawn and scored on at
        # most `score_points` points: enough to rank them, and the cost stays flat for dense tracks.
        sub = rng.choice(n, score_points, replace=False) if n > score_points else np.arange(n)
        idx = sub[rng.integers(0, len(sub), size=(iterations, k))]
        idx = idx[(np.sort(idx, 1)[:, 1:] != np.sort(idx, 1)[:, :-1]).all(1)] if k > 1 else idx
        if len(idx) == 0:
            continue
        if model == "translation":
            hyps = _minimal_fits(model, src[idx], dst[idx])
        else:  # normalised once, so every sample's DLT / solve is well conditioned
            Ts, Td = _hartley(src), _hartley(dst)
            s, d = apply_homography(Ts, src), apply_homography(Td, dst)
            hyps = np.linalg.inv(Td) @ _minimal_fits(model, s[idx], d[idx]) @ Ts
        hyps = hyps[np.isfinite(hyps).all((1, 2))]
        if len(hyps) == 0:
            continue
        err = _transfer_errors(hyps, src[sub], dst[sub])
        score = np.minimum(err, threshold) ** 2  # MSAC: inliers by error, outliers at a flat cost
        H = hyps[int(np.argmin(score.sum(1)))]
        inl = _errors(H, src, dst) < threshold
        # Least squares on the inliers, re-selecting them until they settle.
        for _ in range(4):
            if inl.sum() < max(k, MIN_POINTS[model]):
                break
            H_new = fit_model(model, src[inl], dst[inl], H0=H if model == "homography" else None)
            if H_new is None:
                break
            H = H_new
            new = _errors(H, src, dst) < threshold
            if (new == inl).all():
                break
            inl = new
        if inl.sum() < max(MIN_POINTS[model], min_inlier_ratio * n):
            continue
        if _spread(dst[inl]) < need_spread:
            continue
        if not _plausible(model, H, width, height, max_scale, max_perspective):
            continue
        full_inliers[np.flatnonzero(ok)] = inl
        return MotionFit(H=normalize(H), model=model, inliers=full_inliers,
                         residual=float(_errors(H, src[inl], dst[inl]).mean()))
    return MotionFit(H=np.eye(3), model="identity", inliers=full_inliers, residual=float("nan"))


# ------------------------------------------------------------------ the whole video

def check_tracks(tracks: PointTracks) -> None:
    """Shapes and sizes of ``tracks``, with messages that say what was expected."""
    t = np.asarray(tracks.tracks)
    v = np.asarray(tracks.visibility)
    if t.ndim != 3 or t.shape[-1] != 2:
        raise ValueError(f"point tracks must be [frames, points, 2], got {list(t.shape)}")
    if v.shape != t.shape[:2]:
        raise ValueError(f"track visibility is {list(v.shape)} but the tracks are {list(t.shape[:2])} "
                         f"(frames, points); they must match")
    if t.shape[0] < 1:
        raise ValueError("the point tracks hold no frames")
    if tracks.width < 2 or tracks.height < 2:
        raise ValueError(f"the tracks' video size {tracks.width}×{tracks.height} is not a valid image size")


def estimate_camera_motion(tracks: PointTracks, *, max_model: str = "homography", threshold: float = 3.0,
                           iterations: int = 256, seed: int = 0, refine_passes: int = 2,
                           max_track_outliers: float = 0.2, progress: Callable | None = None) -> CameraMotion:
    """Per-frame background motion relative to frame 0 from ``tracks`` (see the module docstring).

    max_model:     the richest model to fit (``homography`` by default; ``affine``,
                   ``similarity``, ``translation`` for cameras known to move less freely).
    threshold:     RANSAC inlier distance, pixels of the tracks' video.
    iterations:    RANSAC hypotheses per frame and model.
    seed:          seeds RANSAC (per frame and pass, so the result is reproducible).
    refine_passes: anchor-averaging refinement passes after the sequential pass.
    max_track_outliers: tracks that were outliers in more than this fraction of their visible
                   frames are left out of the refinement passes.
    progress:      ``progress(done, total)`` callback.
    """
    check_tracks(tracks)
    P = np.asarray(tracks.tracks, np.float64)
    V = np.asarray(tracks.visibility, bool) & np.isfinite(P).all(-1)
    T, N = V.shape
    W, Hh = int(tracks.width), int(tracks.height)
    total = T * (1 + refine_passes)
    kw = dict(max_model=max_model, threshold=threshold, iterations=iterations)

    Hs = np.tile(np.eye(3), (T, 1, 1))
    models = ["identity"] * T
    inliers = np.zeros((T, N), bool)
    residual = np.full(T, np.nan)

    # 1. Sequential pass: frame t predicted by frame t-1, anchors created as tracks appear.
    anchor_sum = np.zeros((N, 2))
    anchor_n = np.zeros(N)
    anchor = np.full((N, 2), np.nan)
    anchor[V[0]] = P[0, V[0]]
    anchor_sum[V[0]], anchor_n[V[0]] = P[0, V[0]], 1
    inliers[0] = V[0]
    models[0] = "identity"
    for t in range(1, T):
        use = V[t] & ~np.isnan(anchor[:, 0])
        pred = apply_homography(Hs[t - 1], anchor[use])
        fit = fit_motion(pred, P[t, use], W, Hh, seed=[seed, 0, t], **kw)
        Hs[t] = normalize(fit.H @ Hs[t - 1])
        models[t], residual[t] = fit.model, fit.residual
        inliers[t, np.flatnonzero(use)] = fit.inliers
        back = apply_homography(invert(Hs[t]), P[t])
        ok = inliers[t] | (V[t] & np.isnan(anchor[:, 0]))  # inliers, and tracks seen for the first time
        anchor_sum[ok] += back[ok]
        anchor_n[ok] += 1
        anchor[ok] = anchor_sum[ok] / anchor_n[ok, None]
        if progress is not None:
            progress(t + 1, total)

    # 2. Refinement: anchors averaged over every inlier frame, every frame refitted to them.
    for p in range(refine_passes):
        back = apply_homography(invert(Hs), P)  # [T, N, 2] in frame 0
        w = inliers.copy()
        lone = w.sum(0) == 0  # never an inlier: fall back to every visible frame
        w[:, lone] = V[:, lone]
        back = np.where(w[..., None], back, 0.0)
        cnt = w.sum(0)
        anchor = np.where(cnt[:, None] > 0, back.sum(0) / np.maximum(cnt, 1)[:, None], np.nan)
        # Mostly-outlier tracks are dropped everywhere (unless a frame would be left too bare).
        seen = V.sum(0)
        reliable = (V & ~inliers).sum(0) <= max_track_outliers * np.maximum(seen, 1)
        new_inliers = np.zeros_like(inliers)
        for t in range(T):
            use = V[t] & ~np.isnan(anchor[:, 0])
            if (use & reliable).sum() >= MIN_POINTS["homography"]:
                use &= reliable
            pred = apply_homography(Hs[t], anchor[use])
            fit = fit_motion(pred, P[t, use], W, Hh, seed=[seed, p + 1, t], **kw)
            if fit.model != "identity":
                Hs[t] = normalize(fit.H @ Hs[t])
                models[t], residual[t] = fit.model, fit.residual
                new_inliers[t, np.flatnonzero(use)] = fit.inliers
            else:  # keep the previous pass's fit; frames that never fitted keep holding their predecessor
                new_inliers[t] = inliers[t]
                if t > 0 and models[t] == "identity":
                    Hs[t] = Hs[t - 1]
            if progress is not None:
                progress(T * (p + 1) + t + 1, total)
        inliers = new_inliers
        Hs = compose(Hs, invert(Hs[0]))  # frame 0 is the reference: H_0 = I exactly
    Hs[0] = np.eye(3)
    return CameraMotion(homographies=Hs, models=tuple(models), inliers=inliers.sum(1).astype(np.int64),
                        residual=residual, width=W, height=Hh)


def motion_report(motion: CameraMotion) -> str:
    """A short text summary: models used, inliers, residuals, frames that need a look."""
    T = len(motion)
    counts = {m: motion.models.count(m) for m in MODELS if m in motion.models}
    res = np.asarray(motion.residual, np.float64)
    good = res[np.isfinite(res)]
    lines = [f"{T} frames, {motion.width}×{motion.height}: " + ", ".join(f"{n} {m}" for m, n in counts.items())]
    if good.size:
        lines.append(f"inliers per frame {int(np.min(motion.inliers))}–{int(np.max(motion.inliers))} "
                     f"(median {int(np.median(motion.inliers))}); residual mean {good.mean():.2f} px, "
                     f"worst {good.max():.2f} px")
    corners = np.array([[0, 0], [motion.width - 1, 0], [motion.width - 1, motion.height - 1],
                        [0, motion.height - 1]], np.float64)
    moved = np.linalg.norm(apply_homography(motion.homographies, np.broadcast_to(corners, (T, 4, 2))) - corners,
                           axis=-1).mean(-1)
    lines.append(f"background moves up to {moved.max():.1f} px from frame 0 (mean corner displacement)")
    ident = [t for t, m in enumerate(motion.models) if m == "identity" and t > 0]
    if ident:
        lines.append(f"frames without enough background points (previous motion kept): {ident[:20]}"
                     + (" …" if len(ident) > 20 else ""))
    return "\n".join(lines)
