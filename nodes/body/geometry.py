"""Small batched rotation and camera helpers for the body stage (torch, any device/dtype).

Conventions: axis-angle vectors ``[..., 3]`` (angle = norm, radians), rotation matrices
``[..., 3, 3]`` acting on column vectors; pinhole cameras with pixel centres at integer
coordinates, so the image centre of a ``W``×``H`` frame is ``((W − 1) / 2, (H − 1) / 2)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Default focal-length conventions (pixels); see ``default_focal``.
FOCAL_MODES = ("diagonal", "hmr2")


def default_focal(width: int, height: int, mode: str = "diagonal") -> float:
    """Focal length in pixels for a ``width``×``height`` frame with unknown intrinsics.

    ``"diagonal"``: ``f = sqrt(W² + H²)``, a ~53° field of view across the diagonal: the
    convention of CLIFF/WHAM/TRAM and close to phone and consumer cameras (24–35 mm equiv.), so
    near people keep a believable perspective. ``"hmr2"``: ``f = 5000 / 256 · max(W, H)``, the
    very long lens (≈3° field of view, nearly orthographic) HMR2.0 and Champ's data pipeline use;
    pick it to reproduce Champ's renders exactly.
    """
    if mode == "diagonal":
        return float(math.hypot(width, height))
    if mode == "hmr2":
        return 5000.0 / 256.0 * max(width, height)
    raise ValueError(f"focal mode must be one of {FOCAL_MODES}, got {mode!r}.")


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """``[3, 3]`` float64 pinhole matrix, principal point at the image centre."""
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def project(points: torch.Tensor, K: torch.Tensor, min_depth: float = 1e-2) -> torch.Tensor:
    """Camera-space ``[..., N, 3]`` → pixels ``[..., N, 2]`` with ``K`` ``[3, 3]`` or ``[..., 3, 3]``.
    Depths are clamped to ``min_depth`` (points behind the camera land far off-screen)."""
    z = points[..., 2:3].clamp(min=min_depth)
    xy = points[..., :2] / z
    if K.dim() == 2:
        return xy * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    f = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1)[..., None, :]
    c = torch.stack([K[..., 0, 2], K[..., 1, 2]], -1)[..., None, :]
    return xy * f + c


def aa_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues ``[..., 3]`` → ``[..., 3, 3]``, smooth (and NaN-free) at zero."""
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = torch.sqrt(safe2)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(safe)) / safe2)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a * k + b * (k @ k)


def matrix_to_aa(R: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` → axis-angle ``[..., 3]`` with angle in [0, π] (via the quaternion, which is
    stable near 0 and π). Not meant for gradients."""
    R = R.detach()
    m = R.reshape(-1, 3, 3).double()
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    q = torch.stack([1 + tr, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = q.argmax(-1)
    w = torch.empty(m.shape[0], 4, dtype=m.dtype, device=m.device)
    s = torch.sqrt(q.clamp(min=1e-12).gather(1, best[:, None]))[:, 0] * 2  # 4 · |component|
    c0 = best == 0
    c1 = best == 1
    c2 = best == 2
    c3 = best == 3
    w[c0] = torch.stack([s[c0] / 4, (m[c0, 2, 1] - m[c0, 1, 2]) / s[c0], (m[c0, 0, 2] - m[c0, 2, 0]) / s[c0],
                         (m[c0, 1, 0] - m[c0, 0, 1]) / s[c0]], -1)
    w[c1] = torch.stack([(m[c1, 2, 1] - m[c1, 1, 2]) / s[c1], s[c1] / 4, (m[c1, 0, 1] + m[c1, 1, 0]) / s[c1],
                         (m[c1, 0, 2] + m[c1, 2, 0]) / s[c1]], -1)
    w[c2] = torch.stack([(m[c2, 0, 2] - m[c2, 2, 0]) / s[c2], (m[c2, 0, 1] + m[c2, 1, 0]) / s[c2], s[c2] / 4,
                         (m[c2, 1, 2] + m[c2, 2, 1]) / s[c2]], -1)
    w[c3] = torch.stack([(m[c3, 1, 0] - m[c3, 0, 1]) / s[c3], (m[c3, 0, 2] + m[c3, 2, 0]) / s[c3],
                         (m[c3, 1, 2] + m[c3, 2, 1]) / s[c3], s[c3] / 4], -1)
    w = w / w.norm(dim=-1, keepdim=True)
    w = torch.where(w[:, :1] < 0, -w, w)
    vec = w[:, 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w[:, :1])
    aa = torch.where(sin_half > 1e-12, vec / sin_half.clamp(min=1e-12) * angle, 2 * vec)
    return aa.reshape(*R.shape[:-2], 3).to(R.dtype)


def rotation_about_y(angle: torch.Tensor | float, dtype=torch.float64, device=None) -> torch.Tensor:
    """``[..., 3, 3]`` rotation by ``angle`` (radians) about the camera's y axis (down): turning
    an upright body about its vertical axis."""
    angle = torch.as_tensor(angle, dtype=dtype, device=device)
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*angle.shape, 3, 3)


def rotation_angle(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of ``Raᵀ Rb``, broadcasting."""
    tr = (Ra * Rb).sum((-1, -2))
    return torch.arccos(((tr - 1) / 2).clamp(-1.0, 1.0))
