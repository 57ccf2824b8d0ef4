"""Energy terms of the body fitter (``fit.py``), all batched over frames, all returning per-frame
values ``[T]`` in *normalised pixels squared*: pixel distances divided by ``max(W, H) / 1000``,
so that the weights in ``FitConfig`` mean the same at any resolution.
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import project
from .silhouette import geman_mcclure

# DWPose-134 index groups (reference/champ_spec.md §9.3).
BODY = list(range(0, 18))
FEET = list(range(18, 24))
FACE = list(range(24, 92))
HANDS = list(range(92, 134))
TORSO = [1, 2, 5, 8, 11]            # neck, shoulders, hips
HEAD = [0, 14, 15, 16, 17]          # nose, eyes, ears
ERROR_POINTS = BODY + FEET          # "body keypoints" of the reported fit error


def keypoint_weights(model_mask: np.ndarray, feet: float, hands: float, face: float) -> np.ndarray:
    """``[134]`` per-point weights: body 1, then the group weights, 0 where the model has no point."""
    w = np.zeros(134)
    w[BODY] = 1.0
    w[FEET] = feet
    w[HANDS] = hands
    w[FACE] = face
    return w * np.asarray(model_mask, bool)


def observation_weights(conf: torch.Tensor, point_weights: torch.Tensor, min_conf: float) -> torch.Tensor:
    """``[T, 134]`` data weights: confidence² (as SPIN) for points at or above ``min_conf``."""
    return torch.where(conf >= min_conf, conf * conf, torch.zeros_like(conf)) * point_weights


def reprojection(points3d: torch.Tensor, K: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                 scale: float, sigma: float, norm: float = len(BODY)) -> torch.Tensor:
    """Confidence-weighted Geman–McClure reprojection energy per frame ``[T]``.

    points3d ``[T, N, 3]`` camera space, target ``[T, N, 2]`` pixels, weights ``[T, N]``; ``norm``
    divides the sum (a constant, so frames with fewer points weigh less against the priors).
    """
    r = (project(points3d, K) - target) / scale
    return (weights * geman_mcclure((r * r).sum(-1), sigma)).sum(-1) / norm


def pose_prior(pose: torch.Tensor, prior_scale: torch.Tensor, lo: torch.Tensor | None,
               hi: torch.Tensor | None, limit_weight: float) -> torch.Tensor:
    """Per-frame pose prior ``[T]``: ``Σ (θ / s)²`` toward the neutral pose (``s`` per joint and
    axis, e.g. half the joint's range: stiff joints are held harder), plus a soft barrier
    ``limit_weight · Σ (distance outside [lo, hi])²`` (radians)."""
    e = ((pose / prior_scale) ** 2).sum((-1, -2))
    if lo is not None and limit_weight > 0:
        out = torch.relu(pose - hi) + torch.relu(lo - pose)
        e = e + limit_weight * (out * out).sum((-1, -2))
    return e


def temporal(points3d: torch.Tensor, pix_per_m: torch.Tensor, w_vel: float, w_acc: float,
             sigma: float) -> torch.Tensor:
    """Robust (Geman–McClure, scale ``sigma``) velocity and acceleration penalties of 3D points
    ``[T, N, 3]``, in pixel-equivalent units (metres × ``pix_per_m`` ``[T]``, the normalised
    pixels a metre covers at the body's depth): jitter of a few pixels is smoothed, real fast
    motion costs a bounded amount. Returns ``[T]`` (each difference's energy assigned to its
    last frame; zeros for T < 2)."""
    T = points3d.shape[0]
    e = points3d.new_zeros(T)
    if T < 2:
        return e
    p = points3d * pix_per_m[:, None, None]
    if w_vel > 0:
        v = p[1:] - p[:-1]
        e = e + torch.cat([e.new_zeros(1), w_vel * geman_mcclure((v * v).sum(-1), sigma).sum(-1)])
    if w_acc > 0 and T >= 3:
        a = p[2:] - 2 * p[1:-1] + p[:-2]
        e = e + torch.cat([e.new_zeros(2), w_acc * geman_mcclure((a * a).sum(-1), sigma).sum(-1)])
    return e / points3d.shape[1]


def param_velocity(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ w (x_t − x_{t−1})²`` per frame ``[T]`` (0 for the first), summed over trailing dims;
    ``weight`` broadcasts against ``x`` per frame, and a difference takes the larger weight of
    its two frames."""
    if x.shape[0] < 2:
        return x.new_zeros(x.shape[0])
    d = x[1:] - x[:-1]
    d2 = d * d
    if weight is not None:
        d2 = d2 * torch.maximum(weight[1:], weight[:-1])
    return torch.cat([x.new_zeros(1), d2.reshape(x.shape[0] - 1, -1).sum(-1)])
