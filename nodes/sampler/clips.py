"""The clip plan of ``chain`` sampling and the plumbing of its output: the stream of final frames,
the sinks that gather them, and handing freed host memory back (no models, no ComfyUI).

The plan itself is ``nodes/types.py: clip_ranges`` (shared with the stitch stage, which joins
the clips it describes).
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..types import MAX_CLIP_FRAMES


def clip_seed(seed: int, clip: int) -> int:
    """The seed of clip ``clip``'s noise in ``chain`` mode: ``seed`` for the first clip, a 64-bit
    value of ``numpy.random.SeedSequence([seed, clip])`` for the others (independent streams)."""
    if clip == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(clip)]).generate_state(1, dtype=np.uint64)[0])


class NewFramesStream:
    """The ``clip_stream`` used without the stitch stage: each clip's frames that no earlier clip
    produced (the shared ones come from the previous clip; no blending, no colour matching).
    Same interface as the stitch stage's ``ClipStream``: ``push(clip)`` -> frames, ``finish()``."""

    def __init__(self, ranges: Sequence[range]):
        self.ranges, self.clips, self.done = list(ranges), 0, 0

    def push(self, clip: torch.Tensor) -> torch.Tensor:
        r = self.ranges[self.clips]
        out = clip[max(0, self.done - r.start):]
        self.clips, self.done = self.clips + 1, r.stop
        return out

    def finish(self) -> torch.Tensor:
        return torch.empty(0, 0, 0, 3)


def check_plan(ranges: Sequence[range], frames: int) -> None:
    """``ValueError`` unless ``ranges`` chain ``frames`` frames (see the message)."""
    ok = bool(ranges) and ranges[0].start == 0 and ranges[-1].stop == frames
    for a, b in zip(ranges, ranges[1:]):
        ok = ok and a.start < b.start <= a.stop < b.stop and a.stop - b.start < len(b)
    if not ok or any(len(r) > MAX_CLIP_FRAMES for r in ranges):
        raise ValueError(f"the clip plan {[(r.start, r.stop) for r in ranges]} does not chain the {frames} frames: "
                         f"clips of at most {MAX_CLIP_FRAMES} frames, each starting inside the previous one and adding "
                         f"new frames, the first at 0, the last ending at the last frame")


class FrameCollector:
    """A ``frame_sink`` that gathers a whole video into one ``[F, H, W, 3]`` tensor, allocated at
    the first frames (no list of parts and no concatenation copy): what a ComfyUI IMAGE output
    needs. ``result()`` checks that every frame arrived once."""

    def __init__(self, frames: int):
        self.total, self.count, self.frames = int(frames), 0, None

    def __call__(self, frames: torch.Tensor) -> None:
        if self.frames is None:
            self.frames = torch.empty((self.total, *frames.shape[1:]), dtype=torch.float32)
        if self.count + frames.shape[0] > self.total:
            raise ValueError(f"the sampler produced more than the video's {self.total} frames")
        self.frames[self.count:self.count + frames.shape[0]] = frames
        self.count += frames.shape[0]

    def result(self) -> torch.Tensor:
        if self.count != self.total:
            raise ValueError(f"the sampler produced {self.count} of the video's {self.total} frames")
        return self.frames


class LatentCollector:
    """A ``latent_sink`` that gathers the final latents as ComfyUI's LATENT ``[F, 4, h, w]``."""

    def __init__(self, frames: int):
        self.total, self.samples, self.seen = int(frames), None, set()

    def __call__(self, frames: range, latents: torch.Tensor) -> None:
        if self.samples is None:
            self.samples = torch.empty((self.total, latents.shape[1], *latents.shape[3:]), dtype=torch.float32)
        self.samples[list(frames)] = latents[0].transpose(0, 1).float()
        self.seen.update(frames)

    def result(self) -> torch.Tensor:
        if len(self.seen) != self.total:
            raise ValueError(f"the sampler returned latents of {len(self.seen)} of the {self.total} frames")
        return self.samples


class FrameOutput:
    """Frames on their way out of the sampler: resized to ``size`` (``(H, W)`` or None), through
    ``stream`` (``push``/``finish``, or None), then to ``sink`` or kept for ``finish()``."""

    def __init__(self, size, stream, sink):
        self.size, self.stream, self.sink, self.parts = size, stream, sink, []

    def put(self, video: torch.Tensor) -> None:  # [n, 3, H, W]
        if self.size is not None:
            video = F.interpolate(video, size=self.size, mode="bilinear", align_corners=False)
        frames = video.permute(0, 2, 3, 1).contiguous()
        self._emit(self.stream.push(frames) if self.stream is not None else frames)

    def finish(self) -> torch.Tensor | None:
        if self.stream is not None:
            self._emit(self.stream.finish())
        if self.sink is not None:
            return None
        return torch.cat(self.parts) if self.parts else None

    def _emit(self, frames: torch.Tensor) -> None:
        if frames.shape[0] == 0:
            return
        if self.sink is not None:
            self.sink(frames)
        else:
            self.parts.append(frames)


_MALLOC_TRIM = None


def release_host_memory() -> None:
    """Hand freed host memory back to the system after a clip (glibc's ``malloc_trim(0)``, which
    also releases free pages inside the heap). Without it, glibc's dynamic mmap threshold serves
    the per-clip temporaries from the heap, which fragments, and the resident set creeps up over
    hundreds of clips although nothing is kept (bench/long_video_memory.py measures both). A
    no-op where the C library has no ``malloc_trim`` (macOS, Windows, musl)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)
