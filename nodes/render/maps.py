"""Champ's guidance maps (depth, normal, semantic, mask) rendered from a ``BodySequence``.

Conventions (champ_spec.md §8.2, Blender 3.x Cycles at 1 sample; what the Champ weights saw):

- Camera: the sequence's pinhole ``K`` (OpenCV axes, pixel centres at integers), one sample at
  each pixel centre, no anti-aliasing. Faces with a vertex nearer than 0.05 m (Blender's clip
  start) are dropped. Rendering at another size scales ``K`` (``geometry.scale_intrinsics``).
- Normal: smooth shading, i.e. per-vertex normals (corner-angle weighted, as Blender computes
  them; ``normal_weighting="area"`` is available) interpolated perspective-correctly and
  renormalised; flipped toward the viewer on back faces (Cycles does so). Stored in camera
  space with x right, y up, z toward the viewer, encoded ``(n + 1) / 2`` and quantised to 8 bits
  as Blender writes a PNG; background black. A surface facing the camera reads about
  (128, 128, 255): x and y sit on the 127.5 rounding tie, so 127 or 128.
- Depth: the z-buffer (distance along the optical axis), normalised per frame over the body's
  pixels and inverted, ``d = 1 - (z - zmin) / (zmax - zmin)``: nearest body pixel 255, farthest
  0, background 0; grey in all three channels. A frame whose body pixels all share one depth
  (``zmax - zmin <= 1e-6 zmax``; Champ's formula divides by zero there) is 255 over the body: it
  is all "nearest", and the body stays distinct from the background.
- Semantic: per-vertex colour ``SEMANTIC_RGB[label]`` (OpenCV VIRIDIS at ``10 * label``).
  Blender stores byte vertex colours as sRGB, blends them across a face in linear light and
  encodes back with the Standard view transform; we do the same, so a part's interior is exactly
  its table colour and faces that straddle two parts blend as in Champ's renders. Background
  black (the map is multiplied by the mask).
- Mask: coverage, 0 or 1 (Cycles' alpha at one sample).
- Not reproduced: Blender's output dither (±1 level of noise) and Cycles' random sample position
  inside each pixel.

Both backends (``"torch"``: ``raster.py``, on CPU or CUDA; ``"opengl"``: ``gl.py``, EGL offscreen
through pyrender's platform code) produce the same surface samples and share the encoding below.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence

import numpy as np
import torch

from ..types import BodySequence
from .geometry import NEAR_CLIP, closed_orientation, linear_to_srgb, scale_intrinsics, srgb_to_linear, \
    vertex_normals
from .raster import rasterize

log = logging.getLogger(__name__)

MAP_NAMES = ("depth", "normal", "semantic", "mask")
BACKENDS = ("auto", "torch", "opengl")
MAX_SIZE = 8192

# OpenCV COLORMAP_VIRIDIS at 10 * label for SMPL's 24 parts, RGB (champ_spec.md §8.2).
SEMANTIC_RGB = np.array([
    (68, 1, 84), (71, 16, 99), (72, 29, 111), (71, 42, 122), (69, 55, 129), (65, 66, 135),
    (61, 78, 138), (56, 89, 140), (51, 99, 141), (46, 109, 142), (42, 118, 142), (39, 128, 142),
    (35, 137, 142), (32, 146, 140), (30, 156, 137), (33, 165, 133), (40, 174, 128), (53, 183, 121),
    (70, 192, 111), (90, 200, 100), (112, 207, 87), (137, 213, 72), (162, 218, 55), (189, 223, 38),
], dtype=np.uint8)

_FLAT_DEPTH_REL = 1e-6
_gl_error: str | None = None  # why the OpenGL backend could not start, once it failed


def render_guidance(seq: BodySequence, width: int | None = None, height: int | None = None,
                    maps: Sequence[str] = MAP_NAMES, progress: Callable[[int, int], None] | None = None,
                    backend: str = "auto", device: torch.device | str | None = None,
                    normal_weighting: str = "angle", cpu_threads: int | None = 1) -> dict[str, np.ndarray]:
    """Render Champ's guidance maps for every frame of ``seq``.

    Args:
        seq: the fitted bodies; uses ``vertices [T,V,3]`` (camera space, metres), ``faces [F,3]``,
            ``part_labels [V]`` (semantic only), ``K [T,3,3]`` (or ``[3,3]``), ``width``/``height``.
        width, height: output size in pixels; ``None`` keeps the sequence's. ``K`` is scaled to it.
        maps: which of ``"depth"``, ``"normal"``, ``"semantic"``, ``"mask"`` to make.
        progress: ``progress(done, total)`` after each frame; whatever it raises propagates
            (that is how a caller cancels).
        backend: ``"torch"``, ``"opengl"`` or ``"auto"``: OpenGL when ``device`` is the CPU (the
            faster there, see bench/render.py), torch on a GPU. OpenGL falls back to torch, with
            one warning per process, when pyrender or EGL cannot start.
        device: where the torch backend computes; ``None``: CUDA when available, else CPU.
        normal_weighting: ``"angle"`` (Blender's smooth shading) or ``"area"``.
        cpu_threads: torch threads for the per-frame CPU work, restored afterwards; ``None``
            keeps torch's setting. The work is many small ops (~1e5 elements), where OpenMP's
            fork/join gains little on an idle machine but costs 5-10x as soon as another process
            competes for the cores (measured on 2 cores), hence 1.

    Returns:
        ``{"depth"|"normal"|"semantic": float32 [T,H,W,3] in 0..1 (8-bit levels / 255),
        "mask": float32 [T,H,W] of 0/1}``, only the requested keys.

    Raises:
        ValueError: no frames, bad shapes, non-finite values, invalid ``K``, zero or huge size,
            unknown map/backend, labels outside 0..23, or a frame whose body lies wholly behind
            the camera's clip start.
    """
    maps = tuple(maps)
    W, H, K = check_inputs(seq, width, height, maps, backend, normal_weighting)
    T = int(seq.vertices.shape[0])
    want_color = "semantic" in maps
    faces_np = np.asarray(seq.faces, dtype=np.int64)
    labels = np.asarray(seq.part_labels, dtype=np.int64) if want_color else None
    vert_color = (srgb_to_linear(SEMANTIC_RGB[labels] / 255.0).astype(np.float32)
                  if want_color else None)
    cull = closed_orientation(faces_np, np.asarray(seq.vertices[0]))

    out = {name: np.zeros((T, H, W) if name == "mask" else (T, H, W, 3), dtype=np.float32)
           for name in maps}
    want_normal = "normal" in maps
    dev = _default_device() if device is None else torch.device(device)
    gen = None
    if _resolve_backend(backend, dev) == "opengl":
        renderer = _gl_renderer(W, H)
        if renderer is not None:
            gen = _frames_gl(renderer, seq, faces_np, vert_color, K, cull, normal_weighting, want_normal)
    if gen is None:
        gen = _frames_torch(seq, faces_np, vert_color, K, W, H, cull, normal_weighting, dev, want_normal)
    with _torch_threads(cpu_threads):
        for t, surf in enumerate(gen):
            _write_frame(out, t, surf)
            if progress is not None:
                progress(t + 1, T)
    return out


@contextlib.contextmanager
def _torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def check_inputs(seq: BodySequence, width, height, maps, backend, normal_weighting="angle"):
    """Validate everything ``render_guidance`` reads; returns ``(width, height, K [T,3,3] f64)``
    with ``K`` already scaled to the output size."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if normal_weighting not in ("angle", "area"):
        raise ValueError(f"normal_weighting must be 'angle' or 'area', got {normal_weighting!r}.")
    bad = [m for m in maps if m not in MAP_NAMES]
    if bad or not maps:
        raise ValueError(f"maps must be a non-empty subset of {MAP_NAMES}, got {tuple(maps)!r}.")
    verts = np.asarray(seq.vertices)
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"vertices must be [T, V, 3], got shape {verts.shape}.")
    T, V = verts.shape[:2]
    if T == 0:
        raise ValueError("The body sequence has no frames; fit at least one frame before rendering.")
    if V < 3 or not np.isfinite(verts).all():
        raise ValueError(f"vertices must hold at least 3 finite points per frame (got V={V}, "
                         f"{int((~np.isfinite(verts)).sum())} non-finite values).")
    faces = np.asarray(seq.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be a non-empty integer [F, 3] array, got {faces.dtype} {faces.shape}.")
    if faces.min() < 0 or faces.max() >= V:
        raise ValueError(f"faces index vertices {faces.min()}..{faces.max()} but there are {V}.")
    if "semantic" in maps:
        labels = np.asarray(seq.part_labels)
        if labels.shape != (V,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"part_labels must be an integer [V] = [{V}] array, got {labels.dtype} {labels.shape}.")
        if labels.min() < 0 or labels.max() > 23:
            raise ValueError(f"part_labels must be SMPL part ids 0..23, got {labels.min()}..{labels.max()}.")
    for name, value in (("sequence width", seq.width), ("sequence height", seq.height),
                        ("width", width), ("height", height)):
        if value is None and name in ("width", "height"):
            continue
        if int(value) != value or not 0 < int(value) <= MAX_SIZE:
            raise ValueError(f"{name} must be a whole number of pixels in 1..{MAX_SIZE}, got {value!r}.")
    W = int(seq.width if width is None else width)
    H = int(seq.height if height is None else height)
    K = np.asarray(seq.K, dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (T, 3, 3))
    if K.shape != (T, 3, 3):
        raise ValueError(f"K must be [T, 3, 3] = [{T}, 3, 3] (or one [3, 3]), got {K.shape}.")
    if not np.isfinite(K).all():
        raise ValueError("K holds non-finite values.")
    odd = np.nonzero((K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0) | (np.abs(K[:, 1, 0]) > 1e-9)
                     | (np.abs(K[:, 2] - [0.0, 0.0, 1.0]).max(-1) > 1e-9))[0]
    if odd.size:
        raise ValueError(f"K of frame {odd[0]} is not a pinhole intrinsic matrix [[fx, s, cx], [0, fy, cy], "
                         f"[0, 0, 1]] with fx, fy > 0: {K[odd[0]].tolist()}.")
    behind = np.nonzero(~(verts[..., 2] >= NEAR_CLIP).any(1))[0]
    if behind.size:
        raise ValueError(f"The body lies entirely behind the camera (every z < {NEAR_CLIP} m) in "
                         f"{behind.size} frame(s), first frame {behind[0]}; vertices must be in the "
                         "OpenCV camera frame (z forward).")
    K = scale_intrinsics(K, (int(seq.width), int(seq.height)), (W, H))
    return W, H, K


def _resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: OpenGL (EGL) on CPU, where Mesa's llvmpipe beat the torch rasteriser on 2
    cores (bench/render.py); torch on a GPU device, where the vertices already are."""
    if backend != "auto":
        return backend
    return "opengl" if device.type == "cpu" else "torch"


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _gl_renderer(width: int, height: int):
    """The OpenGL renderer, or ``None`` (after one warning per process) when it cannot start."""
    global _gl_error
    if _gl_error is None:
        try:
            from .gl import GLRenderer
            return GLRenderer(width, height)
        except Exception as exc:  # missing package, no EGL, driver trouble: all mean "use torch"
            _gl_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("Marionette render: OpenGL/EGL backend unavailable (%s); using the torch rasteriser.",
                        _gl_error)
    return None


def _frames_torch(seq, faces_np, vert_color, K, W, H, cull, weighting, device, want_normal):
    """Yield one surface dict per frame from the torch rasteriser."""
    faces = torch.as_tensor(faces_np, device=device)
    color = None if vert_color is None else torch.as_tensor(vert_color, device=device)
    for t in range(len(seq)):
        verts = torch.as_tensor(np.asarray(seq.vertices[t], dtype=np.float32), device=device)
        Kt = torch.as_tensor(K[t], device=device)
        frag = rasterize(verts, faces, Kt, W, H, cull=cull)
        surf = {"pix": frag.pix, "z": frag.z}
        attrs = []
        if want_normal:
            attrs.append(vertex_normals(verts, faces, weighting))
        if color is not None:
            attrs.append(color)
        if attrs:
            # Interpolate all per-vertex attributes with one gather and one batched product.
            table = torch.cat(attrs, 1)
            vals = torch.bmm(frag.bary[:, None, :], table[faces[frag.face]]).squeeze(1)
            if want_normal:
                n = vals[:, :3]
                surf["normal"] = torch.where(frag.backfacing[:, None], -n, n)
            if color is not None:
                surf["color"] = vals[:, -3:]
        yield surf


def _frames_gl(renderer, seq, faces_np, vert_color, K, cull, weighting, want_normal):
    """Yield one surface dict per frame from the OpenGL renderer (CPU tensors)."""
    faces = torch.as_tensor(faces_np)
    renderer.set_mesh(faces_np, vert_color, cull)
    for t in range(len(seq)):
        verts = np.asarray(seq.vertices[t], dtype=np.float32)
        vn = vertex_normals(torch.as_tensor(verts), faces, weighting).numpy() if want_normal else None
        yield {k: torch.from_numpy(v) for k, v in renderer.render(verts, vn, K[t]).items()}


def encode_surface(surf: dict[str, torch.Tensor], maps: Sequence[str] = MAP_NAMES) -> dict[str, torch.Tensor]:
    """Each requested map's value at the covered pixels, quantised to 8-bit levels (``k / 255``).

    surf: ``pix [P]``, ``z [P]`` metres, optional ``normal [P,3]`` (interpolated, OpenCV camera
    axes, facing the viewer, any length) and ``color [P,3]`` (interpolated linear RGB).
    Returns float32 ``depth [P]``, ``normal [P,3]``, ``semantic [P,3]`` (those requested).
    """
    out = {}
    if "depth" in maps:
        z = surf["z"]
        d = torch.ones_like(z)
        if z.numel():
            zmin, zmax = z.min(), z.max()
            span = zmax - zmin
            if span > _FLAT_DEPTH_REL * zmax:  # else one depth for the whole body: all "nearest"
                d = 1.0 - (z - zmin) / span
        out["depth"] = _levels(d)
    if "normal" in maps:
        n = surf["normal"]
        # OpenCV camera (y down, z forward) -> Champ's (y up, z toward the viewer), then (n+1)/2.
        scale = torch.tensor([0.5, -0.5, -0.5], dtype=n.dtype, device=n.device)
        n = n * (scale / n.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        out["normal"] = _levels(n + 0.5)
    if "semantic" in maps:
        out["semantic"] = _levels(linear_to_srgb(surf["color"]))
    return out


def _levels(x: torch.Tensor) -> torch.Tensor:
    """0..1 -> the nearest 8-bit level / 255, ties up (``geometry.quantize8``), float32."""
    return torch.floor(x.float() * 255.0 + 0.5).clamp_(0.0, 255.0).div_(255.0)


def _write_frame(out: dict[str, np.ndarray], t: int, surf: dict[str, torch.Tensor]) -> None:
    """Scatter one frame's encoded pixels into the preallocated outputs (background stays 0)."""
    pix = surf["pix"].cpu()
    values = {k: v.cpu() for k, v in encode_surface(surf, tuple(out)).items()}
    if "mask" in out:
        torch.from_numpy(out["mask"][t]).view(-1).index_fill_(0, pix, 1.0)
    if "depth" in out:
        torch.from_numpy(out["depth"][t]).view(-1, 3).index_copy_(0, pix, values["depth"][:, None].expand(-1, 3))
    for name in ("normal", "semantic"):
        if name in out:
            torch.from_numpy(out[name][t]).view(-1, 3).index_copy_(0, pix, values[name])
