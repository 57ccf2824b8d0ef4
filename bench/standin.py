"""A stand-in for Champ's ``chain`` mode when the real weights are absent: a deterministic
generator of clips of a synthetic scene with the defects clip-by-clip generation shows.

    scene = StandInScene(height=96, width=128, clip_frames=24, overlap=4, seed=0)
    clip = scene(range(20, 44), pinned=previous_clip[-4:])   # [24, 96, 128, 3] in [0, 1]

The scene: a textured background (a colour gradient under moving sinusoidal texture whose
frame mean does not change) and a moving, bobbing figure (a striped body and a head) with soft
edges. Per clip ``k`` (``k = start // (clip_frames - overlap)``, as ``clip_ranges`` plans them):

- a colour cast: an RGB gain that does a random walk from clip to clip, with a trend
  (``cast_trend``: chained generations tend to drift one way), and an exposure factor doing
  a random walk of its own: the drift chaining accumulates;
- a content offset: the whole scene shifted by a random-walk ``(dx, dy)`` in pixels;
- noise: per-frame Gaussian noise.

The clip's first ``overlap`` frames follow the pinned frames only partly, as a sampler that
pins latents does: frame ``j`` is ``lerp(own_render, pinned[j], pin_fidelity * (overlap - j) /
overlap)``. Everything is drawn from ``seed``: the same arguments give the same frames.
Plain torch, no Marionette import, so tests and benchmarks can both use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class StandInScene:
    height: int = 96
    width: int = 128
    clip_frames: int = 24
    overlap: int = 4
    seed: int = 0
    cast_step: float = 0.02      # std of the per-clip change of each channel's gain
    cast_trend: tuple = (0.012, 0.0, -0.012)  # per-clip drift of the gains (warmer every clip)
    exposure_step: float = 0.02  # std of the per-clip change of log exposure
    offset_px: float = 0.75      # std of the per-clip change of the content offset, pixels
    noise: float = 0.006         # per-pixel noise std (per-frame generation jitter)
    pin_fidelity: float = 0.3    # how much the first pinned frame follows the pinned frames
    _walk: list = field(default_factory=list, repr=False)

    # ---------------------------------------------------------------- the clean scene

    def render(self, t: int, offset=(0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean frame ``t`` (``[H, W, 3]``) and the figure's coverage (``[H, W]`` in [0, 1]),
        the scene shifted by ``offset = (dx, dy)`` pixels."""
        H, W = self.height, self.width
        y = torch.arange(H, dtype=torch.float32)[:, None] - offset[1]
        x = torch.arange(W, dtype=torch.float32)[None, :] - offset[0]
        # background: gradient + texture with whole periods across the frame (constant frame mean),
        # drifting slowly (a static camera; generated backgrounds still shimmer a little)
        phase = 2 * math.pi * t / 240
        tex = (0.05 * torch.sin(2 * math.pi * (12 * x / W + 3 * y / H) + phase)
               + 0.04 * torch.sin(2 * math.pi * (-5 * x / W + 9 * y / H) - 0.7 * phase)
               + 0.03 * torch.sin(2 * math.pi * (23 * x / W) + 1.3 * phase))
        bg = torch.stack([0.42 + 0.16 * x / W + tex, 0.50 + 0.10 * y / H + 0.8 * tex,
                          0.38 + 0.12 * (1 - x / W) - 0.5 * tex], dim=-1)
        # the figure: walks left-right and back (period 96 frames), bobbing
        cx = W * (0.3 + 0.4 * (0.5 - 0.5 * math.cos(2 * math.pi * t / 96)))
        cy = H * (0.58 + 0.03 * math.sin(2 * math.pi * t / 12))
        rx, ry, r_head = 0.09 * W, 0.26 * H, 0.08 * H
        body = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        head = ((x - cx) ** 2 + (y - (cy - ry - r_head * 0.8)) ** 2).sqrt() / r_head
        body_m = torch.sigmoid((1 - body) * 6)
        head_m = torch.sigmoid((1 - head) * 6)
        stripes = 0.08 * torch.sin(2 * math.pi * (y - cy) / 6)
        shirt = torch.stack([0.20 + stripes, 0.30 + stripes, 0.70 + 0.5 * stripes], dim=-1).expand(H, W, 3)
        skin = torch.tensor([0.85, 0.65, 0.52]).expand(H, W, 3)
        img = bg * (1 - body_m[..., None]) + shirt * body_m[..., None]
        img = img * (1 - head_m[..., None]) + skin * head_m[..., None]
        return img.clamp(0, 1), torch.maximum(body_m, head_m)

    def reference(self) -> torch.Tensor:
        """The reference image: the clean frame 0 (no cast, no offset, no noise)."""
        return self.render(0)[0]

    def figure_mask(self, frames: range) -> torch.Tensor:
        """``[T, H, W]`` bool: where the figure is (clean geometry, dilated by ~2 px so a
        per-clip offset does not leak figure pixels into the background)."""
        masks = torch.stack([self.render(t)[1] for t in frames])
        return torch.nn.functional.max_pool2d(masks[:, None], 5, stride=1, padding=2)[:, 0] > 0.05

    def background_mask(self, frames: range) -> torch.Tensor:
        return ~self.figure_mask(frames)

    def clean(self, frames: range) -> torch.Tensor:
        """The defect-free video over ``frames`` (the ideal the stitching aims for)."""
        return torch.stack([self.render(t)[0] for t in frames])

    # ---------------------------------------------------------------- per-clip defects

    def clip_index(self, frames: range) -> int:
        return frames.start // max(1, self.clip_frames - self.overlap)

    def defects(self, k: int) -> dict:
        """Clip ``k``'s gain ``[3]``, exposure and offset ``(dx, dy)`` (random walks from ``seed``)."""
        g = torch.Generator().manual_seed(int(self.seed) * 7919 + 17)
        while len(self._walk) <= k:
            # replay the walk from the start so that any k is reproducible on its own
            gain, expo, off = torch.ones(3), 0.0, torch.zeros(2)
            self._walk.clear()
            for i in range(k + 1):
                gain = gain + torch.tensor(self.cast_trend) * (i > 0) + self.cast_step * torch.randn(3, generator=g)
                expo = expo + self.exposure_step * float(torch.randn((), generator=g))
                off = off + self.offset_px * torch.randn(2, generator=g)
                self._walk.append({"gain": gain.clone(), "exposure": math.exp(expo), "offset": tuple(off.tolist())})
        return self._walk[k]

    def __call__(self, frames: range, pinned: torch.Tensor | None = None) -> torch.Tensor:
        """The generated clip over ``frames`` ``[T, H, W, 3]`` in [0, 1]; ``pinned``: the previous
        clip's last ``overlap`` frames as generated (None for the first clip)."""
        k = self.clip_index(frames)
        d = self.defects(k)
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + k)
        out = []
        for j, t in enumerate(frames):
            img = self.render(t, d["offset"])[0] * d["gain"] * d["exposure"]
            img = img + self.noise * torch.randn(img.shape, generator=g)
            if pinned is not None and j < min(self.overlap, pinned.shape[0]):
                img = torch.lerp(img, pinned[j].float(), self.pin_fidelity * (self.overlap - j) / self.overlap)
            out.append(img.clamp(0, 1))
        return torch.stack(out)


def generate_clips(scene: StandInScene, ranges):
    """Yield ``(frame_range, clip)`` the way the chain-mode sampler drives Champ: each clip is
    generated with the previous clip's last ``overlap`` *generated* frames pinned (a sampler pins
    its own latents, not the stitched output), so the raw clips do not depend on the stitching."""
    tail = None
    for r in ranges:
        clip = scene(r, tail)
        tail = clip[clip.shape[0] - scene.overlap:] if scene.overlap else None
        yield r, clip
