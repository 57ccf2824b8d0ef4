"""Point tracks drawn as images: a dot per visible point with a short trail of its last frames,
one colour per track, over the video's frames or on black (a guidance / preview map)."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from ..types import PointTracks


def track_colours(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours, hues spread by the golden ratio so neighbours differ."""
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0)]
                     for i in range(n)], np.uint8).reshape(n, 3)


def _frames_uint8(frames, count: int, width: int, height: int) -> np.ndarray | None:
    if frames is None:
        return None
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Draw Tracks expects IMAGE frames [frames, height, width, 3], got shape {list(frames.shape)}")
    if len(frames) not in (1, count):
        raise ValueError(f"Draw Tracks got {len(frames)} frames for tracks of {count} frames; connect the video the "
                         f"tracks were computed on")
    if frames.dtype != np.uint8:
        frames = np.rint(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8)
    return frames


def draw_tracks(tracks: PointTracks, frames=None, trail_frames: int = 8, radius: float = 3.0) -> np.ndarray:
    """``[T, H, W, 3]`` float32 images 0..1 of ``tracks``.

    Args:
        tracks: the tracks to draw.
        frames: IMAGE ``[T or 1, H, W, 3]`` to draw over (any size: positions are scaled with
            pixel centres at integers); ``None`` draws on black at the tracks' own size.
        trail_frames: how many earlier frames each point's trail reaches back (0: dots only);
            the trail follows the frames where the point was visible without a break.
        radius: dot radius in output pixels.
    """
    pos = np.asarray(tracks.tracks, np.float64)
    vis = np.asarray(tracks.visibility, bool)
    t_len, n = vis.shape
    background = _frames_uint8(frames, t_len, tracks.width, tracks.height)
    if background is None:
        height, width = tracks.height, tracks.width
    else:
        height, width = background.shape[1:3]
    sx, sy = width / tracks.width, height / tracks.height
    xy = np.stack([(pos[..., 0] + 0.5) * sx - 0.5, (pos[..., 1] + 0.5) * sy - 0.5], -1)
    colours = [tuple(int(v) for v in c) for c in track_colours(n)]
    line = max(1, int(round(radius * 0.6)))
    out = np.zeros((t_len, height, width, 3), np.float32)
    for t in range(t_len):
        if background is None:
            img = Image.new("RGB", (width, height))
        else:
            img = Image.fromarray(background[min(t, len(background) - 1)])
        draw = ImageDraw.Draw(img)
        for i in np.flatnonzero(vis[t]):
            first = t
            while first > 0 and t - first < trail_frames and vis[first - 1, i]:
                first -= 1
            if first < t:
                draw.line([tuple(p) for p in xy[first:t + 1, i]], fill=colours[i], width=line)
            x, y = xy[t, i]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colours[i])
        out[t] = np.asarray(img, np.float32) / 255.0
    return out
