"""Background-aware sampling: keep a known, moving background plate behind the animated person
(mask-guided latent blending, as in Avrahami et al. 2023 "Blended Latent Diffusion" and the
mask-guided foreground/background decoupling of Liu et al. 2024, arXiv 2405.16393).

After each of the first ``round(fraction * steps)`` DDIM steps the latents outside the person are
replaced by the plate's latents noised to the timestep the step just reached::

    latents = keep * latents + (1 - keep) * (sqrt(a_prev) * plate + sqrt(1 - a_prev) * noise)

``plate`` is the plate's VAE latent (mean x 0.18215, like the reference), ``noise`` the frame's
own initial noise (so the background follows the same DDIM trajectory the sampler started on),
``a_prev`` the cumulative alpha DDIM stepped to (1 after the last step: the clean plate).
``keep`` is 1 on the person and 0 on the background, at the latent grid:

* the person mask is resized to the generation size (stretched like the guidance maps, so both
  stay aligned) and max-pooled to the 8x8 latent cells: a cell with any person pixel is person;
* grown by ``dilate`` cells (the person's outline in the latent is blurrier than in pixels),
  then feathered over the ``feather`` cells around it (a box blur; the person keeps weight 1);
* where the plate is not valid (``valid`` < 1, e.g. plate pixels that were never seen in the
  reference or the driving video), ``keep`` is 1: nothing is enforced there. A latent cell is
  valid only where all its pixels are (min-pooled).

Plain torch, no ComfyUI; the VAE encoding of the plate lives in ``pipeline.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

VAE_SCALE = 8  # pixels per latent cell (SD1.5's VAE)


@dataclass
class BackgroundGuide:
    """A background plate to keep behind the person while sampling.

    plate:       ``[F, H, W, 3]`` float in [0, 1], one frame per video frame (or one frame for a
                 static plate); resized to the generation size if needed.
    person_mask: ``[F, H, W]`` (or ``[1, H, W]``), > 0 on the person (e.g. the body render of
                 the aligned driving sequence); resized likewise.
    valid:       optional ``[F, H, W]`` (or ``[1, H, W]``), 1 where the plate is known; elsewhere
                 nothing is enforced. None: the whole plate is valid.
    fraction:    0..1, the share of the DDIM steps (the first ones) after which the background is
                 blended in. 0 turns blending off; 1 keeps the plate exactly (after the last step).
    dilate:      latent cells (8 px) the person mask is grown by before blending.
    feather:     latent cells of soft transition outside the grown mask.
    """

    plate: torch.Tensor
    person_mask: torch.Tensor
    valid: torch.Tensor | None = None
    fraction: float = 0.6
    dilate: int = 1
    feather: int = 1

    def blend_steps(self, steps: int) -> int:
        """How many of ``steps`` DDIM steps are followed by a blend."""
        return int(round(float(self.fraction) * steps))


def _frames_of(x: torch.Tensor) -> int:
    return int(x.shape[0])


def check_background(guide: BackgroundGuide, frames: int) -> None:
    """``ValueError`` naming what is wrong with the plate or its masks for a ``frames``-frame video."""
    plate, mask, valid = guide.plate, guide.person_mask, guide.valid
    if mask is None:
        raise ValueError("a background plate needs the person's mask (person_mask, e.g. the body render's mask of "
                         "the aligned driving sequence): without it the plate would cover the person")
    if not torch.is_tensor(plate) or plate.ndim != 4 or plate.shape[-1] != 3:
        raise ValueError(f"the background plate must be an IMAGE batch [frames, H, W, 3]; got "
                         f"{list(plate.shape) if torch.is_tensor(plate) else type(plate).__name__}")
    for name, m in (("person_mask", mask), ("plate_valid", valid)):
        if m is None:
            continue
        if not torch.is_tensor(m) or m.ndim != 3:
            raise ValueError(f"{name} must be a MASK [frames, H, W]; got "
                             f"{list(m.shape) if torch.is_tensor(m) else type(m).__name__}")
    for name, x in (("background plate", plate), ("person_mask", mask), ("plate_valid", valid)):
        if x is not None and _frames_of(x) not in (1, frames):
            raise ValueError(f"the {name} has {_frames_of(x)} frames but the video has {frames}; give one per frame "
                             f"(or a single one for the whole video): build it from the same driving video, or trim "
                             f"it to the guidance's frames")
    if min(plate.shape[1:3]) < 1 or min(mask.shape[1:3]) < 1:
        raise ValueError(f"the background plate {list(plate.shape)} and person_mask {list(mask.shape)} must not be "
                         f"empty")
    if not 0.0 <= float(guide.fraction) <= 1.0:
        raise ValueError(f"background fraction must be between 0 and 1; got {guide.fraction}")
    if int(guide.dilate) < 0 or int(guide.feather) < 0:
        raise ValueError(f"dilate and feather must be >= 0 latent cells; got {guide.dilate}, {guide.feather}")


def _pick(x: torch.Tensor, indices) -> torch.Tensor:
    """Frames ``indices`` of ``x`` (a single frame is repeated)."""
    if x.shape[0] == 1:
        return x[[0] * len(indices)]
    return x[list(indices)]


def plate_pixels(guide: BackgroundGuide, indices, width: int, height: int) -> torch.Tensor:
    """The plate's frames ``indices`` as VAE input ``[n, 3, height, width]`` in [-1, 1] (float32,
    CPU); bilinear resize (antialiased when shrinking) when the plate has another size."""
    x = _pick(guide.plate, indices).detach().float().cpu().permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1) * 2.0 - 1.0


def _to_size(m: torch.Tensor, width: int, height: int) -> torch.Tensor:
    m = m.detach().float().cpu()[:, None]
    if tuple(m.shape[-2:]) != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    return m  # [n, 1, H, W]


def keep_mask(guide: BackgroundGuide, indices, width: int, height: int) -> torch.Tensor:
    """The blending weight of the generated latents for frames ``indices``: ``[1, 1, n, h, w]``,
    1 on the (grown) person and where the plate is not valid, 0 on the enforced background."""
    person = (_to_size(_pick(guide.person_mask, indices), width, height) > 0.5).float()
    person = F.max_pool2d(person, VAE_SCALE)  # any person pixel in the cell
    d, f = int(guide.dilate), int(guide.feather)
    if d:
        person = F.max_pool2d(person, 2 * d + 1, stride=1, padding=d)
    keep = person
    if f:  # a box blur spills over the f cells around the (grown) person; inside, the person keeps 1
        soft = F.avg_pool2d(person, 2 * f + 1, stride=1, padding=f, count_include_pad=False)
        keep = torch.maximum(person, soft)
    if guide.valid is not None:
        valid = _to_size(_pick(guide.valid, indices), width, height).clamp(0, 1)
        valid = -F.max_pool2d(-valid, VAE_SCALE)  # a cell is valid where all its pixels are
        keep = 1.0 - (1.0 - keep) * valid
    return keep.permute(1, 0, 2, 3)[None].contiguous()


def noised(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The DDIM forward process ``sqrt(a) x0 + sqrt(1 - a) noise`` for a cumulative alpha ``a``
    (exactly the noise at ``a = 0``, the zero-SNR first timestep; exactly ``x0`` at ``a = 1``)."""
    a = float(alpha_bar)
    if a <= 0.0:
        return noise.clone()
    if a >= 1.0:
        return x0.clone()
    return (a ** 0.5) * x0 + ((1.0 - a) ** 0.5) * noise


def blend(latents: torch.Tensor, plate_latents: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor,
          alpha_bar: float) -> torch.Tensor:
    """``keep * latents + (1 - keep) * noised(plate_latents, noise, alpha_bar)`` in ``latents``'
    dtype and device (all ``[1, 4, n, h, w]``; ``keep`` ``[1, 1, n, h, w]``)."""
    target = noised(plate_latents.to(latents), noise.to(latents), alpha_bar)
    k = keep.to(latents)
    return k * latents + (1.0 - k) * target
