"""Guidance features encoded on demand, for videos too long to hold all of them.

Champ's summed guidance features are ``320 x (H/8) x (W/8)`` floats per frame: 5.2 MB at
512x512, about 5 GB for 1000 frames, while the maps they come from are already held upstream
(ComfyUI keeps every node's IMAGE outputs). ``LazyGuidance`` keeps only references to those maps
(and the encoders' handles) and encodes the frames the sampler asks for, in the same
``chunk_frames`` chunks as ``pipeline.encode_guidance`` with the same arithmetic, so its values
are bit for bit the eager ones; the last ``cache_chunks`` chunks are kept, so neighbouring
windows and clips do not encode a chunk twice.

Cost: in ``chain`` mode each chunk is encoded about once. In ``aggregate`` mode every step visits
every window, so each chunk is encoded once per step (the guidance encoders are small next to
the UNet); Encode Guidance therefore stays eager below a byte budget.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch

from .pipeline import (VAE_SCALE, ModuleSource, _device_dtype, _encoder_bytes, check_guidance_maps,
                       prepare_guidance_map)


class LazyGuidance:
    """Champ guidance features ``[1, C, F, height/8, width/8]`` that are encoded when asked.

    Args:
        get: the models (``pipeline.module_source`` or the node's cache-backed source).
        maps: guidance type -> IMAGE batch ``[F, H, W, 3]`` (kept by reference, not copied).
        width, height: the animation size (multiples of 8).
        strengths: type -> weight of its features in the sum (default 1.0 each).
        semantic_mask: ``[F, H, W]`` (or one frame) for the semantic map, as ``encode_guidance``.
        chunk_frames: frames per encoder call (``encode_guidance``'s default 16: equal values).
        cache_chunks: encoded chunks kept for the next request.

    ``take(frames)`` -> ``[1, C, n, h, w]`` float32 on the CPU for the frame indices ``frames``
    (a range or list, may wrap or repeat); ``shape`` / ``ndim`` / ``nbytes`` describe the whole
    tensor without encoding it (the channel count is read from an encoder).
    """

    ndim = 5

    def __init__(self, get: ModuleSource, maps: Mapping[str, torch.Tensor], width: int, height: int,
                 strengths: Mapping[str, float] | None = None, semantic_mask: torch.Tensor | None = None,
                 chunk_frames: int = 16, cache_chunks: int = 3):
        self.frames = check_guidance_maps(maps, width, height)
        if semantic_mask is not None and "semantic_map" in maps:
            sem = maps["semantic_map"]
            m = semantic_mask
            if m.shape[0] not in (1, self.frames) or tuple(m.shape[1:3]) != tuple(sem.shape[1:3]):
                raise ValueError(f"the semantic mask {list(m.shape)} must have the semantic map's frames and size "
                                 f"{list(sem.shape[:3])} (or be one frame of that size)")
        self.get, self.maps, self.width, self.height = get, dict(maps), int(width), int(height)
        self.strengths = {k: float((strengths or {}).get(k, 1.0)) for k in self.maps}
        self.semantic_mask = semantic_mask
        self.chunk_frames, self.cache_chunks = max(1, int(chunk_frames)), max(1, int(cache_chunks))
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._channels: int | None = None
        self.encoded_chunks = 0  # how many chunks were encoded so far (cache misses)

    def __len__(self) -> int:
        return self.frames

    @property
    def channels(self) -> int:
        if self._channels is None:
            encoder = self.get(f"guidance_encoder_{next(iter(self.maps))}", memory_required=0)
            self._channels = int(encoder.conv_out.out_channels)
        return self._channels

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (1, self.channels, self.frames, self.height // VAE_SCALE, self.width // VAE_SCALE)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole feature tensor in float32 (what eager encoding would hold)."""
        _, c, f, h, w = self.shape
        return c * f * h * w * 4

    @torch.no_grad()
    def take(self, frames: Sequence[int]) -> torch.Tensor:
        idx = [int(i) for i in frames]
        bad = [i for i in idx if not 0 <= i < self.frames]
        if bad:
            raise IndexError(f"guidance frames {bad[:5]} are outside the video's {self.frames} frames")
        if not idx:
            raise ValueError("take() needs at least one frame")
        chunks = sorted({i // self.chunk_frames for i in idx})
        # encode every missing chunk first, then gather (a chunk needed now is never evicted meanwhile)
        pieces = {c: self._chunk(c, keep=chunks) for c in chunks}
        local, offset = {}, 0
        for c in chunks:
            local[c] = offset
            offset += pieces[c].shape[2]
        joined = pieces[chunks[0]] if len(chunks) == 1 else torch.cat([pieces[c] for c in chunks], dim=2)
        where = torch.tensor([local[i // self.chunk_frames] + i % self.chunk_frames for i in idx])
        return joined.index_select(2, where)

    def _chunk(self, c: int, keep: Sequence[int]) -> torch.Tensor:
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        start, stop = c * self.chunk_frames, min(self.frames, (c + 1) * self.chunk_frames)
        out = None
        for kind, images in self.maps.items():  # the eager order: the sum comes out bit for bit the same
            mask = None
            if kind == "semantic_map" and self.semantic_mask is not None:
                mask = self.semantic_mask if self.semantic_mask.shape[0] == 1 else self.semantic_mask[start:stop]
            x = prepare_guidance_map(images[start:stop], self.width, self.height, mask)
            encoder = self.get(f"guidance_encoder_{kind}", memory_required=_encoder_bytes(x, self.chunk_frames))
            device, dtype = _device_dtype(encoder)
            feats = encoder(x.to(device, dtype)).float().cpu() * self.strengths[kind]
            out = feats if out is None else out + feats
        self.encoded_chunks += 1
        self._cache[c] = out
        excess = len(self._cache) - max(self.cache_chunks, len(keep))
        for old in [k for k in self._cache if k not in keep][:max(0, excess)]:
            self._cache.pop(old)
        return out

    def __repr__(self) -> str:
        return f"LazyGuidance({self.frames} frames, {self.width}x{self.height}, maps={tuple(self.maps)})"
