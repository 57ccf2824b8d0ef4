"""Joining generated clips into one long video: the clip plan, seam blending and colour matching.

Plain torch, no ComfyUI, no sampler import. The sampler's ``chain`` mode drives it:

1. ``clip_ranges(frames, clip_frames, overlap)`` plans the clips; neighbours share ``overlap``
   frames, and each clip's first ``overlap`` frames are pinned to the previous clip's last ones.
2. Each generated clip goes through ``ClipStream.push``; it returns the frames that are final
   (colour-matched, seams blended) and keeps only the last ``overlap`` frames back for the next
   seam. ``finish()`` returns those at the end.

Colour matching (``match_colors``, ``ColorReference``) is Reinhard-style transfer in CIE Lab:
one affine map per channel (``lab' = scale * lab + shift``) per *clip*, fitted so that the
clip's mean and standard deviation over all its frames (optionally only the pixels of a mask)
match the target's. One map per clip keeps the clip's own frame-to-frame changes intact (no
flicker inside a clip); matching every clip to the same reference keeps clips from drifting
apart. Why the reference and not the previous clip (``anchor="previous"``, also available):
a chain of clip-to-clip corrections estimated on a few overlap frames adds up its errors
(a random walk again), while every clip matched to the reference has an error that does not
grow with the video's length; ``bench/long_video.py`` measures both. Matching whole frames to
the reference assumes comparable content (same person, same background, as Champ keeps them);
the correction is bounded (std ratio clamped to ``[1/max_ratio, max_ratio]``, shift to a
ΔE of ``max_shift``) so a clip whose content genuinely differs is nudged, not wrecked. Pass a
background mask where one exists: the background is what should not change colour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .. import types
from ..types import Stitching

clip_ranges = types.clip_ranges  # the clip plan, shared with the sampler (nodes/types.py)

MAX_CLIP_FRAMES = types.MAX_CLIP_FRAMES
MODES = ("aggregate", "chain")
BLENDS = ("none", "linear", "pyramid")
COLOR_MATCHES = ("none", "reference")
ANCHORS = ("reference", "previous")


# ------------------------------------------------------------------------------ the plan

def validate(stitching: Stitching) -> Stitching:
    """``stitching`` with its numbers as int/float; ``ValueError`` naming the bad field, its
    allowed values and a fix."""
    s = stitching
    if s.mode not in MODES:
        raise ValueError(f"stitching mode must be one of {list(MODES)}; got '{s.mode}'")
    if s.blend not in BLENDS:
        raise ValueError(f"seam blend must be one of {list(BLENDS)}; got '{s.blend}'")
    if s.color_match not in COLOR_MATCHES:
        raise ValueError(f"color_match must be one of {list(COLOR_MATCHES)}; got '{s.color_match}'")
    clip, overlap, strength = int(s.clip_frames), int(s.overlap), float(s.color_strength)
    if not 2 <= clip <= MAX_CLIP_FRAMES:
        raise ValueError(f"clip_frames must be between 2 and {MAX_CLIP_FRAMES} (the motion modules' position "
                         f"encoding holds {MAX_CLIP_FRAMES} frames); got {clip}. The official setting is 24")
    if not 0 <= overlap < clip:
        raise ValueError(f"overlap must be between 0 and clip_frames - 1 ({clip - 1}); got {overlap}. "
                         f"The official setting is 4 with 24-frame clips")
    if not (0.0 <= strength <= 1.0) or math.isnan(strength):
        raise ValueError(f"color_strength must be between 0 and 1; got {s.color_strength}")
    return replace(s, clip_frames=clip, overlap=overlap, color_strength=strength)


# ------------------------------------------------------------------------------ seams

def _check_frames(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{what} must be frames [k, H, W, 3]; got {list(x.shape)}")


def seam_weights(k: int) -> torch.Tensor:
    """The next clip's weight on each of the ``k`` shared frames: ``(i + 1) / (k + 1)``, so the
    frame before the seam is all previous clip and the frame after it all next clip."""
    return torch.arange(1, k + 1, dtype=torch.float32) / (k + 1)


def _ramp(k: int, span: float) -> torch.Tensor:
    """Seam weights squeezed into a central fraction ``span`` of the overlap (span 1 = linear)."""
    t = seam_weights(k)
    return ((t - 0.5) / span + 0.5).clamp(0.0, 1.0)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur of ``[N, C, H, W]`` (reflect borders)."""
    c = x.shape[1]
    kern = _BINOMIAL.to(x)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), kern.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), kern.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[N, C, H, W]`` -> ``levels`` band-pass images (finest first) + the low-pass residual.
    Exact: ``collapse(laplacian_pyramid(x))`` is ``x`` up to rounding, at any size."""
    bands = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 6:  # reflect padding needs > 2 pixels after halving
            break
        low = _blur(x)[..., ::2, ::2]
        bands.append(x - _up(low, x.shape[-2:]))
        x = low
    return bands + [x]


def collapse(pyramid: list[torch.Tensor]) -> torch.Tensor:
    x = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        x = band + _up(x, band.shape[-2:])
    return x


def blend_seam(prev_tail: torch.Tensor, next_head: torch.Tensor, mode: str = "linear", levels: int = 5,
               min_span: float = 0.5) -> torch.Tensor:
    """Join the ``k`` frames two neighbouring clips both generated (``[k, H, W, 3]`` float in
    [0, 1]: the previous clip's last frames, the next clip's first) into ``k`` frames.

    ``none``: the next clip's frames. ``linear``: a cross-fade with ``seam_weights(k)``.
    ``pyramid``: a Laplacian-pyramid blend, per frame: the low-pass residual is cross-faded over
    the whole overlap (colour and exposure change gently), finer bands over a central span that
    shrinks to ``min_span`` of the overlap at the finest band (textures switch quickly instead of
    showing both clips' details at once: less ghosting). ``min_span`` 0.5 is the measured
    compromise (bench/long_video.py): 0.25 ghosts least but makes the texture switch a visible
    step. Equal inputs give the input back.
    """
    _check_frames(prev_tail, "prev_tail")
    _check_frames(next_head, "next_head")
    if prev_tail.shape != next_head.shape:
        raise ValueError(f"the seam's two sides must have the same shape; got {list(prev_tail.shape)} and "
                         f"{list(next_head.shape)}")
    if mode not in BLENDS:
        raise ValueError(f"seam blend must be one of {list(BLENDS)}; got '{mode}'")
    k = prev_tail.shape[0]
    if mode == "none" or k == 0:
        return next_head.clone()
    a, b = prev_tail.float(), next_head.float()
    if mode == "linear":
        w = seam_weights(k).to(a.device).view(k, 1, 1, 1)
        return torch.lerp(a, b, w)
    pa = laplacian_pyramid(a.permute(0, 3, 1, 2), levels)
    pb = laplacian_pyramid(b.permute(0, 3, 1, 2), levels)
    n = len(pa) - 1
    blended = []
    for level, (la, lb) in enumerate(zip(pa, pb)):
        span = 1.0 if n == 0 else min_span + (1.0 - min_span) * level / n
        blended.append(torch.lerp(la, lb, _ramp(k, span).to(la.device).view(k, 1, 1, 1)))
    return collapse(blended).permute(0, 2, 3, 1).clamp(0.0, 1.0).contiguous()


# ------------------------------------------------------------------------------ colour

# sRGB (D65) linear RGB -> XYZ, IEC 61966-2-1; the white point is its row sums, so sRGB white
# lands exactly on L=100, a=b=0.
_RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_WHITE = _RGB2XYZ.sum(dim=1)
_EPS = (6.0 / 29.0) ** 3


def _linearize(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def _gamma(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(min=0.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``[..., 3]`` in [0, 1] -> CIE Lab (D65, 2°): L in [0, 100], a/b roughly [-128, 127].
    Computed in float64 for float64 input, else float32 (fp16 frames would lose the cube root)."""
    dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    lin = _linearize(rgb.to(dtype).clamp(0.0, 1.0))
    xyz = lin @ (_RGB2XYZ / _WHITE[:, None]).T.to(lin)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) ``[..., 3]`` -> sRGB in [0, 1] (out-of-gamut colours clipped)."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-1)
    xyz = torch.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    lin = xyz @ (_XYZ2RGB * _WHITE[None, :]).T.to(xyz)
    return _gamma(lin).clamp(0.0, 1.0)


@dataclass
class LabStats:
    """Per-channel mean and standard deviation in Lab (float64 ``[3]`` each) and the pixel
    weight they were computed over."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: float


def _as_mask(mask, frames: torch.Tensor) -> torch.Tensor | None:
    """A ``[T, H, W]`` float weight for ``frames [T, H, W, 3]`` (accepts ``[H, W]``, ``[1, H, W]``,
    a trailing channel axis, bool)."""
    if mask is None:
        return None
    m = torch.as_tensor(mask).float()
    if m.ndim == frames.ndim:  # [T, H, W, 1] / [T, H, W, 3]
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(frames.shape[1:3]) or m.shape[0] not in (1, frames.shape[0]):
        raise ValueError(f"the colour mask must be [H, W] or [T, H, W] matching the frames {list(frames.shape[:3])}; "
                         f"got {list(torch.as_tensor(mask).shape)}")
    return m.expand(frames.shape[0], -1, -1)


def lab_stats(frames: torch.Tensor, mask=None, chunk: int = 8) -> LabStats:
    """Lab mean/std of ``frames [T, H, W, 3]`` over all frames together (the pixels of ``mask``
    only, weighted by it, when given); ``chunk`` frames at a time to bound the temporaries."""
    _check_frames(frames, "frames")
    m = _as_mask(mask, frames)
    s1 = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    total = 0.0
    for i in range(0, frames.shape[0], chunk):
        lab = srgb_to_lab(frames[i:i + chunk].float()).double().reshape(-1, 3)
        w = None if m is None else m[i:i + chunk].to(lab).reshape(-1, 1)
        s1 += (lab if w is None else lab * w).sum(0).cpu()
        s2 += (lab ** 2 if w is None else lab ** 2 * w).sum(0).cpu()
        total += float(lab.shape[0] if w is None else w.sum())
    if total <= 0:
        raise ValueError("the colour mask selects no pixels; pass a mask with some pixels > 0 (or none)")
    mean = s1 / total
    std = (s2 / total - mean ** 2).clamp(min=0.0).sqrt()
    return LabStats(mean=mean, std=std, weight=total)


@dataclass
class ColorReference:
    """The colour target: Lab mean/std (float64 ``[3]``) of the reference image (or of its
    masked pixels: e.g. the background, or the person)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_image(cls, reference: torch.Tensor, mask=None) -> "ColorReference":
        """``reference`` ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1]; ``mask`` ``[H, W]``."""
        image = reference if reference.ndim == 4 else reference[None]
        stats = lab_stats(image, mask)
        return cls(mean=stats.mean, std=stats.std)

    @classmethod
    def from_stats(cls, stats: LabStats) -> "ColorReference":
        return cls(mean=stats.mean.clone(), std=stats.std.clone())


@dataclass
class ColorTransform:
    """``lab' = scale * lab + shift`` per Lab channel (float64 ``[3]`` each): one per clip."""

    scale: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def identity(cls) -> "ColorTransform":
        return cls(scale=torch.ones(3, dtype=torch.float64), shift=torch.zeros(3, dtype=torch.float64))

    def apply(self, frames: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """``frames [T, H, W, 3]`` in [0, 1] through the map, ``chunk`` frames at a time."""
        out = torch.empty_like(frames, dtype=frames.dtype if frames.is_floating_point() else torch.float32)
        for i in range(0, frames.shape[0], chunk):
            lab = srgb_to_lab(frames[i:i + chunk].float())
            out[i:i + chunk] = lab_to_srgb(lab * self.scale.to(lab) + self.shift.to(lab))
        return out


def fit_transform(source: LabStats, target, strength: float = 1.0, max_ratio: float = 2.0,
                  max_shift: float = 25.0) -> ColorTransform:
    """The map taking ``source`` statistics to ``target`` (``ColorReference`` or ``LabStats``),
    ``strength`` of the way (0 = identity, 1 = full, linear in between).

    Bounds, so that different content is not forced into the reference's statistics: each
    channel's std ratio is clamped to ``[1/max_ratio, max_ratio]`` and the mean shift (after
    scaling) to a Lab length ``max_shift`` (a ΔE76; a chaining cast is a few units per clip).
    """
    ratio = (target.std / source.std.clamp(min=1e-6)).clamp(1.0 / max_ratio, max_ratio)
    ratio = torch.where(source.std < 1e-6, torch.ones_like(ratio), ratio)  # flat channel: keep it flat
    shift = target.mean - source.mean  # applied around the source mean
    length = float(shift.norm())
    if length > max_shift:
        shift = shift * (max_shift / length)
    s = float(strength)
    scale = 1.0 + s * (ratio - 1.0)
    return ColorTransform(scale=scale, shift=source.mean * (1.0 - scale) + s * shift)


def color_transform(frames: torch.Tensor, reference: ColorReference, strength: float = 1.0, mask=None,
                    **bounds) -> ColorTransform:
    """The one map for a whole clip: its Lab statistics over all frames (and ``mask``) -> the
    reference's. ``bounds``: ``max_ratio``, ``max_shift`` of ``fit_transform``."""
    return fit_transform(lab_stats(frames, mask), reference, strength, **bounds)


def match_colors(frames: torch.Tensor, reference: ColorReference, strength: float = 1.0, mask=None,
                 **bounds) -> torch.Tensor:
    """``frames [T, H, W, 3]`` (one clip) colour-matched to ``reference`` with ONE transform for
    all frames (see ``color_transform``): the clip's own frame-to-frame changes are kept."""
    if strength <= 0:
        return frames.clone()
    return color_transform(frames, reference, strength, mask, **bounds).apply(frames)


# ------------------------------------------------------------------------------ streaming

class ClipStream:
    """Turns clips (as ``clip_ranges`` plans them, pushed in order) into final frames, holding
    at most ``overlap`` frames between pushes (constant memory, whatever the video's length).

    Args:
        overlap: frames neighbouring clips share (the plan's ``overlap``).
        blend: ``none`` / ``linear`` / ``pyramid`` (``blend_seam``).
        reference: a ``ColorReference`` to match every clip to, or None for no colour matching.
        strength: 0..1, how much of the colour correction is applied.
        anchor: ``reference``: every clip is matched to ``reference`` (default: the error does
            not grow with the video's length); ``previous``: the first clip is matched to
            ``reference`` and each later one to the previous clip's corrected last frames via the
            shared overlap frames (seamless colours, but the estimation errors add up).
        max_ratio, max_shift: the correction's bounds (``fit_transform``).

    ``push(clip, mask=None)`` -> the frames now final (``[n, H, W, 3]``, in order);
    ``finish()`` -> the rest. ``mask`` (``[T, H, W]`` or ``[H, W]``, e.g. the background) limits the
    pixels the clip's colour statistics are taken over; build the reference with a matching one.
    Every frame of the video comes out exactly once.
    """

    def __init__(self, overlap: int, blend: str = "linear", reference: ColorReference | None = None,
                 strength: float = 1.0, anchor: str = "reference", max_ratio: float = 2.0, max_shift: float = 25.0):
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0; got {overlap}")
        if blend not in BLENDS:
            raise ValueError(f"seam blend must be one of {list(BLENDS)}; got '{blend}'")
        if anchor not in ANCHORS:
            raise ValueError(f"colour anchor must be one of {list(ANCHORS)}; got '{anchor}'")
        self.overlap, self.blend, self.reference = int(overlap), blend, reference
        self.strength, self.anchor = float(strength), anchor
        self.bounds = dict(max_ratio=max_ratio, max_shift=max_shift)
        self._held: torch.Tensor | None = None  # the last `overlap` frames shown so far (a copy)
        self._tail_stats: LabStats | None = None  # Lab stats of the previous clip's corrected tail
        self._empty = torch.empty(0, 0, 0, 3)  # what finish() returns with nothing held
        self.clips = 0
        self.emitted = 0
        self.transforms: list[ColorTransform] = []  # one per clip, for inspection (a few floats each)

    @property
    def held(self) -> int:
        """Frames held back for the next seam (never more than ``overlap``)."""
        return 0 if self._held is None else int(self._held.shape[0])

    def _correct(self, clip: torch.Tensor, mask) -> torch.Tensor:
        if self.reference is None or self.strength <= 0:
            self.transforms.append(ColorTransform.identity())
            return clip.float()
        k = min(self.overlap, clip.shape[0])
        m = _as_mask(mask, clip)
        if self.anchor == "previous" and self._tail_stats is not None and k > 0:
            head = lab_stats(clip[:k], None if m is None else m[:k])
            transform = fit_transform(head, self._tail_stats, self.strength, **self.bounds)
        else:
            transform = color_transform(clip, self.reference, self.strength, m, **self.bounds)
        out = transform.apply(clip)
        if self.anchor == "previous" and k > 0:
            self._tail_stats = lab_stats(out[-k:], None if m is None else m[-k:])
        self.transforms.append(transform)
        return out

    def push(self, clip: torch.Tensor, mask=None) -> torch.Tensor:
        """Add the next generated clip ``[T, H, W, 3]`` (T > overlap after the first clip; its
        first ``overlap`` frames are the previous clip's last ones); returns the frames now final."""
        _check_frames(clip, "a clip")
        k = self.overlap
        if self._held is not None and clip.shape[0] <= k:
            raise ValueError(f"a clip after the first must have more than overlap={k} frames to add new ones; got "
                             f"{clip.shape[0]} (plan the clips with clip_ranges)")
        if self._held is not None and tuple(clip.shape[1:]) != tuple(self._held.shape[1:]):
            raise ValueError(f"every clip must have the same frame size; got {list(clip.shape[1:])} after "
                             f"{list(self._held.shape[1:])}")
        if self._held is not None and self._held.shape[0] != k:
            raise ValueError(f"the first clip had {self._held.shape[0]} frames, not more than overlap={k}; a video "
                             f"of several clips needs clips longer than the overlap (plan them with clip_ranges)")
        out = self._correct(clip, mask)
        if out.data_ptr() == clip.data_ptr():
            out = out.clone()  # never write into the caller's tensor
        if self._held is not None and k > 0:
            out[:k] = blend_seam(self._held, out[:k], self.blend)
        keep = min(k, out.shape[0])
        # clone: a slice would keep the whole clip's storage alive until the next push
        self._held = out[out.shape[0] - keep:].clone() if keep else None
        self.clips += 1
        ready = out[:out.shape[0] - keep]
        self._empty = out[:0].clone()  # [0, H, W, 3]: concatenates with the frames
        self.emitted += ready.shape[0]
        return ready

    def finish(self) -> torch.Tensor:
        """The frames still held (the last clip's tail); the stream is empty afterwards."""
        rest = self._held if self._held is not None else self._empty
        self._held, self._tail_stats = None, None
        self.emitted += rest.shape[0]
        return rest
