"""Synthetic videos for the tracking tests: a smooth colour texture panning by a known amount per
frame, with a flat-coloured "person" disc moving across it, and that disc's mask."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class PanningVideo:
    frames: torch.Tensor  # [T, H, W, 3] float 0..1
    mask: torch.Tensor  # [T, H, W] float, 1 = person
    velocity: tuple[float, float]  # texture motion in pixels per frame (x, y)
    centres: np.ndarray  # [T, 2] person centre
    radius: float

    def expected(self, xy0: np.ndarray, frame0: np.ndarray | int = 0) -> np.ndarray:
        """Where background points at ``xy0`` ``[N, 2]`` on ``frame0`` are on every frame ``[T, N, 2]``."""
        t = np.arange(len(self.frames))[:, None, None]
        f0 = np.broadcast_to(np.asarray(frame0), (len(xy0),))[None, :, None]
        return np.asarray(xy0, np.float64)[None] + np.asarray(self.velocity)[None, None] * (t - f0)


def panning_video(frames: int = 24, height: int = 96, width: int = 128, velocity=(-1.5, 0.5), cell: float = 6.0,
                  person_radius: float = 14.0, person_speed: float = 3.0, seed: int = 0) -> PanningVideo:
    """The texture seen by a camera panning so background points move by ``velocity`` px/frame
    (a bicubic interpolation of coarse random colours: smooth, so sub-pixel shifts are exact);
    a grey disc of ``person_radius`` crosses it horizontally at ``person_speed`` px/frame."""
    g = torch.Generator().manual_seed(seed)
    vx, vy = velocity
    span = int(np.ceil(max(abs(vx), abs(vy)) * frames)) + 2
    gh, gw = int((height + 2 * span) / cell) + 6, int((width + 2 * span) / cell) + 6
    coarse = torch.rand(1, 3, gh, gw, generator=g)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    out, masks, centres = [], [], []
    for t in range(frames):
        # a scene point at u shows at u + v t, so the frame samples the scene at x - v t
        u = (xs - vx * t + span + 2 * cell) / cell
        v = (ys - vy * t + span + 2 * cell) / cell
        grid = torch.stack([u / (gw - 1) * 2 - 1, v / (gh - 1) * 2 - 1], -1)[None]
        img = F.grid_sample(coarse, grid, mode="bicubic", align_corners=True)[0].permute(1, 2, 0).clamp(0, 1)
        cx, cy = width * 0.2 + person_speed * t, height * 0.5
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2) <= person_radius ** 2
        img[disc] = 0.5
        out.append(img)
        masks.append(disc.float())
        centres.append((cx, cy))
    return PanningVideo(torch.stack(out), torch.stack(masks), (vx, vy), np.array(centres), person_radius)
