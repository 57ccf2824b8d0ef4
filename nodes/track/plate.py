"""The moving background plate: the reference image without its person, moved like the driving
video's camera.

Plain torch, no ComfyUI. Steps:

1. **Hole.** The reference person mask, dilated by ``dilation_px`` (a disc, built from
   alternating 3×3 square and cross max-pools) so the person's outline and shadow go too.
2. **Inpaint** (``inpaint``): a deterministic, model-free fill, coarse to fine. A pyramid of
   known-pixel averages (push) fills every hole at the coarsest level; going back up, each level
   starts from the upsampled coarser fill and relaxes the hole towards the membrane (harmonic)
   solution by Jacobi sweeps with the known pixels fixed (pull). The fill is smooth, follows the
   colours all around the hole and has no seams; it is a plate to be covered by the animated
   person, not a texture synthesis.
3. **Warp** (``warp_plate``): frame t samples the inpainted reference at ``H_t⁻¹ q`` for each
   plate pixel q (``H_t`` = the camera motion rescaled to the plate size), bilinear, chunk by
   chunk. Pixels whose source falls outside the reference are filled by reflection (or edge
   extension) and marked invalid.

The reference image is taken to show the scene as the video's frame 0 does (same framing,
possibly another resolution): motion and reference are matched by their relative image
coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..types import CameraMotion
from . import camera

PADDING = ("reflection", "border")


@dataclass
class BackgroundPlate:
    """The plate: ``frames`` ``[T, H, W, 3]`` float 0..1; ``valid`` ``[T, H, W]`` float, 1 where
    the pixel comes from inside the reference image; ``background`` ``[H, W, 3]`` the inpainted
    reference at the plate size (frame 0 before warping); ``hole`` ``[H, W]`` float, the dilated
    person region that was inpainted, at the plate size."""

    frames: torch.Tensor
    valid: torch.Tensor
    background: torch.Tensor
    hole: torch.Tensor


def check_inputs(reference: torch.Tensor, mask: torch.Tensor, motion: CameraMotion, dilation_px: int) -> None:
    """Shapes, sizes and mask coverage, with messages that say what to connect instead."""
    if reference.dim() != 3 or reference.shape[-1] != 3:
        raise ValueError(f"the reference image must be [height, width, 3], got {list(reference.shape)}")
    h, w = reference.shape[:2]
    if mask.shape != (h, w):
        raise ValueError(f"the reference mask is {mask.shape[1] if mask.dim() > 1 else '?'}×{mask.shape[0]} "
                         f"but the reference image is {w}×{h}: use the person mask made from this same image")
    if len(motion) < 1:
        raise ValueError("the camera motion holds no frames")
    if abs(motion.width / motion.height - w / h) > 0.02 * (w / h):
        raise ValueError(f"the camera motion is for {motion.width}×{motion.height} frames but the reference image "
                         f"is {w}×{h} (another aspect ratio): crop or resize the reference to the driving video's "
                         f"aspect ratio first")
    if dilation_px < 0:
        raise ValueError(f"dilation_px must be 0 or more, got {dilation_px}")
    person = mask > 0.5
    if not bool(person.any()):
        raise ValueError("the reference mask is empty (no pixel above 0.5): connect the reference person's mask "
                         "(white = person), e.g. from a segmentation node")
    if bool(person.all()):
        raise ValueError("the reference mask covers the whole image, so there is no background to keep: connect "
                         "the person's mask (white = person), not its inverse")


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool ``[H, W]`` mask grown by about ``radius`` pixels in every direction (an octagon close
    to a disc: square and cross 3×3 steps alternate)."""
    m = mask[None, None].float()
    for i in range(int(radius)):
        if i % 2 == 0:
            m = F.max_pool2d(m, 3, stride=1, padding=1)
        else:  # cross: max of the vertical and horizontal 3-tap pools
            m = torch.maximum(F.max_pool2d(m, (3, 1), stride=1, padding=(1, 0)),
                              F.max_pool2d(m, (1, 3), stride=1, padding=(0, 1)))
    return m[0, 0] > 0.5


def _relax(x: torch.Tensor, hole: torch.Tensor, iterations: int) -> torch.Tensor:
    """Jacobi sweeps of the 4-neighbour mean inside ``hole`` (``[1,1,H,W]`` bool), others fixed.
    Only the hole's bounding box (plus the one-pixel ring it reads) is swept; image borders are
    mirrored (zero normal gradient)."""
    rows = torch.nonzero(hole[0, 0].any(1))
    cols = torch.nonzero(hole[0, 0].any(0))
    if len(rows) == 0:
        return x
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, x.shape[-2])
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, x.shape[-1])
    c, m = x[..., y0:y1, x0:x1], hole[..., y0:y1, x0:x1]
    for _ in range(iterations):
        p = F.pad(c, (1, 1, 1, 1), mode="replicate")
        avg = 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])
        c = torch.where(m, avg, c)
    x = x.clone()
    x[..., y0:y1, x0:x1] = c
    return x


def inpaint(image: torch.Tensor, hole: torch.Tensor, iterations: int = 40) -> torch.Tensor:
    """``image`` ``[H, W, C]`` with the ``hole`` ``[H, W]`` (bool, True = fill) filled smoothly
    from its surroundings (see the module docstring). Known pixels are returned unchanged."""
    if not bool(hole.any()):
        return image.clone()
    if bool(hole.all()):
        raise ValueError("nothing to inpaint from: the hole covers the whole image")
    x = image.permute(2, 0, 1)[None].float()
    k = (~hole)[None, None].float()
    # Push: known-pixel averages down to a level where every pixel has some known support.
    levels = [(x, k)]
    while bool((levels[-1][1] == 0).any()) and min(levels[-1][0].shape[-2:]) > 1:
        xs, ks = levels[-1]
        s = F.avg_pool2d(xs * ks, 2, ceil_mode=True)
        w = F.avg_pool2d(ks, 2, ceil_mode=True)
        levels.append((s / w.clamp_min(1e-12), w))
    xs, ks = levels[-1]
    fill = torch.where(ks > 0, xs, (x * k).sum((-2, -1), keepdim=True) / k.sum())
    # Pull: upsample, keep what is known at this level, relax the rest.
    for xs, ks in reversed(levels[:-1]):
        up = F.interpolate(fill, size=xs.shape[-2:], mode="bilinear", align_corners=False)
        unknown = ks == 0
        fill = torch.where(unknown, up, xs)
        # Coarse levels are tiny, so they get more sweeps; each level only corrects detail.
        n = iterations * 4 if max(xs.shape[-2:]) <= 64 else iterations
        fill = _relax(fill, unknown, n)
    out = torch.where(k > 0, x, fill)
    return out[0].permute(1, 2, 0).to(image.dtype)


def warp_plate(background: torch.Tensor, homographies: np.ndarray, *, padding: str = "reflection",
               chunk: int = 8, out_device="cpu", progress: Callable | None = None):
    """Frames ``[T, H, W, 3]`` and validity ``[T, H, W]`` of ``background`` (``[H, W, 3]``) moved
    by ``homographies`` (``[T, 3, 3]``, frame-0 → frame-t pixels of this size). Computed chunk by
    chunk on the background's device, collected on ``out_device`` (a long video's plate need not
    fit next to the models)."""
    if padding not in PADDING:
        raise ValueError(f"padding '{padding}' is not one of {PADDING}")
    H, W = background.shape[:2]
    T = len(homographies)
    dev = background.device
    # float32 is exact to ~1e-3 px at 4096 px: plenty for bilinear sampling.
    inv = torch.as_tensor(camera.invert(homographies), dtype=torch.float32, device=dev)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32, device=dev),
                            torch.arange(W, dtype=torch.float32, device=dev), indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # [HW, 3]
    src = background.permute(2, 0, 1)[None].float()
    frames = torch.empty((T, H, W, 3), dtype=torch.float32, device=out_device)
    valid = torch.empty((T, H, W), dtype=torch.float32, device=out_device)
    for start in range(0, T, chunk):
        stop = min(T, start + chunk)
        p = q @ inv[start:stop].transpose(1, 2)  # [n, HW, 3] source pixels
        z = p[..., 2]
        front = z > 1e-6
        u = torch.where(front, p[..., 0] / torch.where(front, z, 1), torch.full_like(z, -1e6))
        v = torch.where(front, p[..., 1] / torch.where(front, z, 1), torch.full_like(z, -1e6))
        inside = front & (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)
        # grid_sample's normalised coordinates (align_corners=False): pixel centres at integers.
        grid = torch.stack([(2 * u + 1) / W - 1, (2 * v + 1) / H - 1], -1).clamp(-1e4, 1e4)
        grid = grid.reshape(stop - start, H, W, 2)
        out = F.grid_sample(src.expand(stop - start, -1, -1, -1), grid, mode="bilinear", padding_mode=padding,
                            align_corners=False)
        frames[start:stop] = out.permute(0, 2, 3, 1).clamp(0, 1).to(out_device)
        valid[start:stop] = inside.reshape(stop - start, H, W).float().to(out_device)
        if progress is not None:
            progress(stop, T)
    return frames, valid


def make_background_plate(reference: torch.Tensor, mask: torch.Tensor, motion: CameraMotion, *,
                          dilation_px: int = 8, width: int = 0, height: int = 0, padding: str = "reflection",
                          inpaint_iterations: int = 40, chunk: int = 8, device=None,
                          progress: Callable | None = None) -> BackgroundPlate:
    """The moving background plate (see the module docstring).

    reference:   ``[H, W, 3]`` float 0..1, the reference image (frame 0's framing).
    mask:        ``[H, W]`` the reference person's mask (> 0.5 = person).
    motion:      the driving video's camera motion (any size of the same aspect ratio).
    dilation_px: how far the person mask is grown before inpainting, reference pixels.
    width/height: plate size in pixels; 0 keeps the reference's.
    padding:     how pixels from outside the reference are filled (``reflection`` or ``border``).
    device:      where to compute (default: the reference's device).
    progress:    ``progress(done, total)`` callback over the frames.
    """
    reference = torch.as_tensor(reference)
    mask = torch.as_tensor(mask)
    check_inputs(reference, mask, motion, dilation_px)
    dev = torch.device(device) if device is not None else reference.device
    h, w = reference.shape[:2]
    width, height = int(width or w), int(height or h)
    hole = dilate((mask > 0.5).to(dev), dilation_px)
    if bool(hole.all()):
        raise ValueError(f"dilating the person mask by {dilation_px} px covers the whole reference image: lower "
                         f"dilation_px")
    filled = inpaint(reference.to(dev).float(), hole, iterations=inpaint_iterations)
    if (width, height) != (w, h):
        filled = F.interpolate(filled.permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
                               align_corners=False, antialias=True)[0].permute(1, 2, 0)
        hole_out = F.interpolate(hole[None, None].float(), size=(height, width), mode="bilinear",
                                 align_corners=False, antialias=True)[0, 0] > 0.01
    else:
        hole_out = hole
    H = camera.rescale_homographies(motion.homographies, (motion.width, motion.height), (width, height))
    frames, valid = warp_plate(filled.clamp(0, 1), H, padding=padding, chunk=chunk, progress=progress)
    return BackgroundPlate(frames=frames, valid=valid, background=filled.clamp(0, 1).cpu(), hole=hole_out.float().cpu())
