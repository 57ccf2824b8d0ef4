"""A z-buffer triangle rasteriser in plain torch (CPU or CUDA, whichever holds the tensors).

One sample per pixel at the pixel centre (integer coordinates), no anti-aliasing, like Champ's
1-sample Cycles renders.

How: a face's three edge functions and its inverse depth ``1/z`` are all affine in the pixel
position, so per face they form a ``[4, 3]`` matrix acting on ``(1, x, y)`` relative to the
face's tile origin. Faces are grouped by bounding-box size into power-of-two tiles
(2x2 ... 32x32) and each group is evaluated for all its faces at once with one batched matmul
against the tile's pixel grid (no per-pixel gathers); the rare bigger faces expand into
per-pixel fragments. Covered samples are depth-resolved with one ``scatter_reduce`` of packed
``(1/z, face)`` keys per group, and the winning face's perspective-correct barycentrics are
recomputed for the covered pixels only.

Edges: a pixel centre within ``EDGE_TOL`` pixels outside a face counts as inside, so the two
faces sharing an edge always both claim a centre lying on it (no cracks from rounding); the
depth test then picks one. Silhouettes grow by at most that tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .geometry import NEAR_CLIP

EDGE_TOL = 1e-3  # pixels
_MIN_TILE_LOG2 = 1  # tiles are 2x2 .. 32x32 samples
_MAX_TILE = 32  # faces whose box needs a bigger tile are expanded pixel by pixel
_KEY_EMPTY = -1  # keys are >= 0 (1/z > 0)
_FACE_MASK = 0xFFFFFFFF


@dataclass
class Fragments:
    """The visible surface at each covered pixel of one frame.

    pix:        ``[P]`` long, flat pixel index ``row * width + col``, ascending.
    face:       ``[P]`` long, index into the mesh's faces.
    bary:       ``[P, 3]`` float32, perspective-correct barycentrics of the pixel centre on ``face``.
    z:          ``[P]`` float32, camera-space depth (metres along the optical axis).
    backfacing: ``[P]`` bool, the face's geometric normal points away from the camera (the
                renderer then flips the shading normal, as Cycles does).
    """

    pix: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    z: torch.Tensor
    backfacing: torch.Tensor


def project(verts: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pinhole projection. verts ``[V, 3]`` camera space; K ``[3, 3]`` (``K[1,0] = 0``, last row
    ``0 0 1``). Returns pixel ``u, v`` and depth ``z``, each ``[V]``; ``u, v`` are meaningless
    where ``z <= 0`` (callers drop such faces)."""
    x, y, z = verts.unbind(-1)
    iz = 1.0 / torch.where(z > 0, z, torch.ones_like(z))
    u = (K[0, 0] * x + K[0, 1] * y) * iz + K[0, 2]
    v = K[1, 1] * y * iz + K[1, 2]
    return u, v, z


def rasterize(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, width: int, height: int,
              cull: int = 0, near: float = NEAR_CLIP, max_fragments: int = 1 << 22) -> Fragments:
    """Rasterise one frame.

    verts: ``[V, 3]`` float camera space (OpenCV axes, metres); faces: ``[F, 3]`` long;
    K: ``[3, 3]`` pixels (``fx, fy > 0``); width/height: image size.
    cull: ``+1`` drop back faces, ``-1`` drop front faces, ``0`` keep both
    (``geometry.closed_orientation`` says when culling cannot change the image).
    near: faces with any vertex nearer than this (metres) are dropped, not clipped.
    max_fragments: samples evaluated per batch, bounding the memory (about 50 bytes each).
    """
    device = verts.device
    # Set-up in float64 (per vertex and per face: cheap); per-sample work in float32.
    u, v, z = project(verts.double(), K.double())
    corner = torch.stack([u, v, z], 1)[faces]  # [F, 3 corners, (u, v, z)]
    fu, fv, fz = corner.unbind(2)
    # Twice the signed screen area. With z > 0 and fx, fy > 0 its sign is that of
    # cross(b - a, c - a) . a: > 0 means the face's normal points away from the camera.
    signed2 = (fu[:, 1] - fu[:, 0]) * (fv[:, 2] - fv[:, 0]) - (fv[:, 1] - fv[:, 0]) * (fu[:, 2] - fu[:, 0])
    valid = fz.amin(1) >= near
    if cull > 0:
        valid &= signed2 <= 0
    elif cull < 0:
        valid &= signed2 >= 0
    # Pixel centres inside each face's bounding box, clipped to the image.
    x0 = torch.ceil(fu.amin(1)).clamp(min=0)
    x1 = torch.floor(fu.amax(1)).clamp(max=width - 1)
    y0 = torch.ceil(fv.amin(1)).clamp(min=0)
    y1 = torch.floor(fv.amax(1)).clamp(max=height - 1)
    valid &= (x1 >= x0) & (y1 >= y0) & (signed2 != 0)
    keep = torch.nonzero(valid).squeeze(1)
    if keep.numel() == 0:
        return _empty(device)

    x0, y0 = x0[keep].long(), y0[keep].long()
    bw, bh = (x1[keep].long() - x0 + 1), (y1[keep].long() - y0 + 1)
    # Tile per face: the smallest power of two (at least _MIN_TILE) holding its box, its origin
    # shifted left/up so the tile stays inside the image (tile samples beyond the box are simply
    # outside the face). Fewer, fuller tile shapes beat exact fits: each shape costs a pass.
    lw = _log2_ceil(bw).clamp(min=_MIN_TILE_LOG2)
    lh = _log2_ceil(bh).clamp(min=_MIN_TILE_LOG2)
    tw, th = 1 << lw, 1 << lh
    big = (tw > _MAX_TILE) | (th > _MAX_TILE) | (tw > width) | (th > height)
    ox = torch.where(big, x0, torch.minimum(x0, width - tw))
    oy = torch.where(big, y0, torch.minimum(y0, height - th))
    M, tol = _face_matrices(corner[keep], ox, oy)
    base = oy * width + ox  # flat index of each face's tile origin

    zbuf = torch.full((height * width,), _KEY_EMPTY, dtype=torch.int64, device=device)
    # Sort the faces by tile shape so that each shape's faces form one contiguous slice.
    shape_id = torch.where(big, -1, lw * 8 + lh)
    order = torch.argsort(shape_id)
    ids, counts = torch.unique_consecutive(shape_id[order], return_counts=True)
    M_sorted, base_sorted = M[order], base[order]
    M32 = M_sorted.float()
    start = 0
    for sid, n in zip(ids.tolist(), counts.tolist()):
        if sid < 0:
            sel = order[start:start + n]
            _fragment_pass(zbuf, M_sorted[start:start + n], base_sorted[start:start + n], bw[sel], bh[sel],
                           sel, width, max_fragments)
        else:
            sw, sh = 1 << (sid // 8), 1 << (sid % 8)
            step = max(1, max_fragments // (sw * sh))
            for a in range(start, start + n, step):
                b = min(a + step, start + n)
                _tile_pass(zbuf, M32[a:b], base_sorted[a:b], order[a:b], sw, sh, width)
        start += n

    pix = torch.nonzero(zbuf != _KEY_EMPTY).squeeze(1)
    if pix.numel() == 0:
        return _empty(device)
    key = zbuf[pix]
    local = _FACE_MASK - (key & _FACE_MASK)  # index into the kept faces
    zval = 1.0 / (key >> 32).to(torch.int32).view(torch.float32)
    # Perspective-correct barycentrics of the winning face: b_k ~ E_k / z_k, itself affine.
    face = keep[local]
    rel = pix - base[local]
    basis = torch.stack([torch.ones_like(pix), rel % width, rel // width], 1).float()
    E = M[:, :3].clone()
    E[:, :, 0] -= tol  # the true edge functions
    Bz = (E / corner[keep, :, 2:]).float()
    bary = torch.bmm(Bz[local], basis[:, :, None]).squeeze(2)
    bary = bary / bary.sum(1, keepdim=True)
    return Fragments(pix=pix, face=face, bary=bary, z=zval, backfacing=signed2[face] > 0)


def _empty(device) -> Fragments:
    long = torch.zeros(0, dtype=torch.long, device=device)
    return Fragments(pix=long, face=long.clone(), bary=torch.zeros((0, 3), device=device),
                     z=torch.zeros(0, device=device), backfacing=torch.zeros(0, dtype=torch.bool, device=device))


def _log2_ceil(n: torch.Tensor) -> torch.Tensor:
    """``ceil(log2(n))`` for long ``n >= 1``."""
    return torch.ceil(torch.log2(n.double())).long()


def _face_matrices(corner, ox, oy):
    """Per face, the affine map from ``(1, x - ox, y - oy)`` to the three sign-normalised edge
    functions, each raised by its tolerance so that "inside" reads ``>= 0`` (rows 0-2), and to
    the inverse depth ``1/z`` (row 3; affine in screen space for a planar face).

    corner: ``[F, 3, 3]`` float64 projected corners ``(u, v, z)``; ox, oy: ``[F]`` tile origins.
    Returns ``M [F, 4, 3]`` and ``tol [F, 3]`` (the raises, to take off again for barycentrics),
    float64."""
    pu = corner[:, :, 0] - ox[:, None]  # small numbers near the tile origin
    pv = corner[:, :, 1] - oy[:, None]
    rows, lens = [], []
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        du, dv = pu[:, j] - pu[:, i], pv[:, j] - pv[:, i]
        # E_k(x, y) = du (y - v_i) - dv (x - u_i): zero on edge i->j, 2A (signed) at vertex k.
        rows.append(torch.stack([dv * pu[:, i] - du * pv[:, i], -dv, du], 1))
        lens.append(torch.sqrt(du * du + dv * dv))
    E = torch.stack(rows, 1)  # [F, 3, 3]
    signed2 = E[:, 0, 0] + E[:, 0, 1] * pu[:, 0] + E[:, 0, 2] * pv[:, 0]
    E = E * torch.where(signed2 < 0, -1.0, 1.0).to(E.dtype)[:, None, None]
    tol = EDGE_TOL * torch.stack(lens, 1)  # a distance in pixels times the edge length
    # 1/z = sum_k b_k / z_k with screen barycentrics b_k = E_k / 2A.
    inv_z = (E / corner[:, :, 2:]).sum(1, keepdim=True) / signed2.abs()[:, None, None]
    E[:, :, 0] += tol
    return torch.cat([E, inv_z], 1), tol


def _resolve(zbuf, face, inv_z, pix):
    """Fold covered samples into the z-buffer. Positive float32 bit patterns order like the
    floats, so (1/z bits, inverted face index) packs into one int64 whose maximum is the
    nearest sample (ties: the lower face index)."""
    key = (inv_z.float().view(torch.int32).to(torch.int64) << 32) | (_FACE_MASK - face)
    zbuf.scatter_reduce_(0, pix, key, reduce="amax")


def _tile_pass(zbuf, M, base, face, sw, sh, width):
    """Evaluate faces (``M [n, 4, 3]``, tile origins ``base [n]``, kept-face ids ``face [n]``),
    all with ``sw x sh`` tiles, on their whole tiles with one matmul."""
    basis, offset = _tile_grid(sw, sh, width, M.device)
    vals = torch.matmul(M, basis)  # [n, 4, S]
    inv_z = vals[:, 3]
    f, s = torch.nonzero((vals[:, :3].amin(1) >= 0) & (inv_z > 0), as_tuple=True)
    if f.numel():
        _resolve(zbuf, face[f], inv_z[f, s], base[f] + offset[s])


def _tile_grid(sw, sh, width, device):
    """``basis [3, S]`` rows ``(1, x, y)`` over an ``sw x sh`` tile and each sample's flat offset."""
    gx = torch.arange(sw, device=device).repeat(sh)
    gy = torch.arange(sh, device=device).repeat_interleave(sw)
    return torch.stack([torch.ones_like(gx), gx, gy], 0).float(), gy * width + gx


def _fragment_pass(zbuf, M, base, bw, bh, face, width, max_fragments):
    """Faces too big for a tile (``M [n, 4, 3]`` float64, origin = box origin ``base [n]``, box
    size ``bw, bh``, kept-face ids ``face``): expand each into the pixel centres of its box,
    ``max_fragments`` at a time, in float64 (offsets can reach the image size)."""
    device = M.device
    count = bw * bh
    cum = torch.cumsum(count, 0)
    start = 0
    while start < face.numel():
        done = int(cum[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(cum, done + max_fragments, right=True)), start + 1)
        n = int(cum[stop - 1]) - done
        lf = torch.repeat_interleave(torch.arange(start, stop, device=device), count[start:stop], output_size=n)
        idx = torch.arange(n, device=device) + done - (cum[lf] - count[lf])
        dx, dy = idx % bw[lf], idx // bw[lf]
        basis = torch.stack([torch.ones_like(dx), dx, dy], 1).double()
        vals = torch.bmm(M[lf], basis[:, :, None]).squeeze(2)
        hit = torch.nonzero((vals[:, :3].amin(1) >= 0) & (vals[:, 3] > 0)).squeeze(1)
        if hit.numel():
            lh = lf[hit]
            _resolve(zbuf, face[lh], vals[hit, 3], base[lh] + dy[hit] * width + dx[hit])
        start = stop
