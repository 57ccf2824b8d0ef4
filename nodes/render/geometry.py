"""Mesh and camera helpers shared by both render backends (plain torch/numpy).

Frames and units: camera-space vertices in the OpenCV camera (x right, y down, z forward),
metres; pixel centres at integer coordinates (``nodes/types.py``).
"""
from __future__ import annotations

import numpy as np
import torch

# Blender's default camera clip start in Champ's scene (champ_spec.md §8.2), metres. Faces with a
# vertex nearer than this are dropped (both backends, so they agree) instead of being clipped.
NEAR_CLIP = 0.05


def scale_intrinsics(K: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics for rendering the same view at another image size.

    K: ``[..., 3, 3]`` pixels, for an image of ``src_size = (width, height)``.
    Returns ``[..., 3, 3]`` float64 for ``dst_size``. With pixel centres at integers a pixel edge
    sits at ``-0.5``, so the map is ``u' + 0.5 = s (u + 0.5)``: focal and skew scale by ``s``,
    the principal point by ``c' = s (c + 0.5) - 0.5`` (the image border stays the border).
    """
    sx = dst_size[0] / src_size[0]
    sy = dst_size[1] / src_size[1]
    out = np.array(K, dtype=np.float64, copy=True)
    out[..., 0, 0] *= sx
    out[..., 0, 1] *= sx
    out[..., 0, 2] = sx * (out[..., 0, 2] + 0.5) - 0.5
    out[..., 1, 1] *= sy
    out[..., 1, 2] = sy * (out[..., 1, 2] + 0.5) - 0.5
    return out


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, weighting: str = "angle") -> torch.Tensor:
    """Smooth per-vertex unit normals.

    verts: ``[V, 3]`` float; faces: ``[F, 3]`` long. Returns ``[V, 3]``, oriented by the faces'
    winding (``cross(b - a, c - a)``); isolated vertices get zero normals.
    weighting: ``"angle"`` weights each face normal by its corner angle at the vertex (Blender's
    smooth shading, i.e. what Champ's renders used); ``"area"`` by the face area.
    """
    corners = [verts[faces[:, k]] for k in range(3)]
    edges = [corners[(k + 1) % 3] - corners[k] for k in range(3)]  # edge k runs corner k -> k+1
    cross = torch.linalg.cross(edges[0], -edges[2])  # (b - a) x (c - a), |cross| = 2 * area
    out = torch.zeros_like(verts)
    if weighting == "area":
        for k in range(3):
            out.index_add_(0, faces[:, k], cross)
    elif weighting == "angle":
        unit = cross / cross.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        dirs = [e / e.norm(dim=-1, keepdim=True).clamp_min(1e-30) for e in edges]
        for k in range(3):
            # Corner k lies between edge k (outgoing) and edge k-1 (incoming, reversed); Blender
            # weighs by acos of their dot product the same way.
            ang = torch.acos((-(dirs[k] * dirs[k - 1]).sum(-1)).clamp(-1.0, 1.0))
            out.index_add_(0, faces[:, k], unit * ang[:, None])
    else:
        raise ValueError(f"normal weighting must be 'angle' or 'area', got {weighting!r}.")
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def closed_orientation(faces: np.ndarray, verts: np.ndarray) -> int:
    """Whether back faces can be culled without changing the image.

    faces: ``[F, 3]``; verts: ``[V, 3]`` one frame. For a closed, consistently wound mesh the first
    surface a camera ray meets (from outside) is always a front face, so back faces never show.
    Returns ``+1`` (closed, wound outward: cull faces whose normal points away from the camera),
    ``-1`` (closed, wound inward: cull the other side) or ``0`` (open or inconsistent: cull none).
    """
    f = np.asarray(faces, dtype=np.int64)
    if f.shape[0] == 0:
        return 0
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1
    key = directed[:, 0] * n + directed[:, 1]
    rev = directed[:, 1] * n + directed[:, 0]
    # Closed and consistent: every directed edge unique, and its reverse present exactly once.
    if np.unique(key).size != key.size or not np.array_equal(np.sort(key), np.sort(rev)):
        return 0
    v = np.asarray(verts, dtype=np.float64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0
    if volume == 0.0:
        return 0
    return 1 if volume > 0 else -1


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded 0..1 -> linear light (the IEC 61966-2-1 curve Blender uses for byte colours)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Linear light -> sRGB-encoded 0..1 (Blender's "Standard" view transform), clamped to 0..1."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """0..1 float -> the 8-bit level an image writer stores, as uint8 (round half up, clamped),
    as Blender's ``unit_float_to_uchar_clamp`` does."""
    return torch.floor(x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
