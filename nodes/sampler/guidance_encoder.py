"""Champ's guidance encoder (champ_spec.md §3): one small convolutional network per guidance map
(depth, normal, semantic map, DWPose skeleton) that turns ``[B, 3, F, H, W]`` images in [0, 1] into
``[B, 320, F, H/8, W/8]`` features; the four outputs are summed and added to the denoising UNet's
input right after its ``conv_in`` (Zhu et al. 2024, "Champ", §3.2 "Multi-layer motion fusion").

Everything runs frame by frame:

    conv_in (3→16) → SiLU → 6 × (3×3 conv → SiLU), strides 1,2,1,2,1,2 → attentions[5] → conv_out

``attentions`` holds one spatial transformer after each conv, but the official forward uses only
the last one; the other five and ``guidance_attention`` are never run. They are still defined
because the official ``guidance_encoder_*.pth`` files hold their weights, so the files load with
every key checked. ``conv_out`` starts at zero, as in the official code.

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``models/guidance_encoder.py`` (commit 02e5533, MIT); no code was copied. The spatial transformers
are diffusers' ``Transformer2DModel`` (the official ``Transformer3DModel`` without temporal
attention is the same layer applied per frame) with the denoising UNet's leaner forward
(``unet3d.SpatialTransformer``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unet3d import SpatialTransformer


@dataclass(frozen=True)
class GuidanceEncoderConfig:
    """``guidance_encoder_kwargs`` of Champ's inference.yaml.

    Args:
        guidance_embedding_channels (int, default 320): output channels; must equal the
            denoising UNet's first block width.
        guidance_input_channels (int, default 3): channels of a guidance image (RGB).
        block_out_channels (tuple[int, ...], default (16, 32, 96, 256)): widths of ``conv_in``
            and of each stride-2 stage.
        attention_num_heads (int, default 8): heads of every spatial transformer.
    """

    guidance_embedding_channels: int = 320
    guidance_input_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    attention_num_heads: int = 8

    def __post_init__(self):
        widths = tuple(self.block_out_channels)
        object.__setattr__(self, "block_out_channels", widths)
        if len(widths) < 2:
            raise ValueError(f"block_out_channels needs at least two widths, got {widths}")
        bad = [c for c in widths if c % self.attention_num_heads]
        if bad:
            raise ValueError(f"every guidance-encoder width must be divisible by attention_num_heads="
                             f"{self.attention_num_heads}; {bad} in block_out_channels={widths} are not")
        bad = [c for c in widths[1:] if c % 32]
        if bad:
            raise ValueError(f"the stride-2 widths of the guidance encoder are normalised with 32 groups, so they "
                             f"must be divisible by 32; {bad} in block_out_channels={widths} are not")

    @property
    def downscale(self) -> int:
        """Spatial reduction (8 for the official four widths)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_state_dict(cls, state_dict: dict, attention_num_heads: int = 8) -> "GuidanceEncoderConfig":
        """The widths a ``guidance_encoder_*.pth`` file was trained with, read from its conv
        weights (the release ships no config for the encoders; the official widths are in
        inference.yaml). The loader then checks every tensor against a module built from
        them, so a damaged file still fails with a clear message. Raises ``KeyError`` when a
        conv weight it needs is absent."""
        stages = sum(1 for k in state_dict if k.startswith("blocks.") and k.endswith(".weight")) // 2
        conv_in = state_dict["conv_in.weight"]
        widths = [conv_in.shape[0]] + [state_dict[f"blocks.{2 * i + 1}.weight"].shape[0] for i in range(stages)]
        return cls(guidance_embedding_channels=state_dict["conv_out.weight"].shape[0],
                   guidance_input_channels=conv_in.shape[1], block_out_channels=tuple(widths),
                   attention_num_heads=attention_num_heads)


def _spatial_transformer(channels: int, heads: int, groups: int) -> SpatialTransformer:
    """One self-attention transformer block without cross-attention (GroupNorm(groups) → 1×1
    proj_in → LayerNorm/self-attention → LayerNorm/GEGLU feed-forward → 1×1 proj_out, residual):
    diffusers' ``Transformer2DModel`` with the UNet's leaner forward."""
    return SpatialTransformer(num_attention_heads=heads, attention_head_dim=channels // heads, in_channels=channels,
                              num_layers=1, norm_num_groups=groups)


class GuidanceEncoder(nn.Module):
    """Champ's per-frame guidance encoder.

    Args:
        config (GuidanceEncoderConfig): widths; the default is the official encoder.
        device, dtype: where and in which precision the parameters are created.
    """

    def __init__(self, config: GuidanceEncoderConfig = GuidanceEncoderConfig(), device=None, dtype=None):
        super().__init__()
        self.config = config
        widths, heads = config.block_out_channels, config.attention_num_heads
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.conv_in = nn.Conv2d(config.guidance_input_channels, widths[0], kernel_size=3, padding=1)
            self.blocks = nn.ModuleList()
            self.attentions = nn.ModuleList()
            for c_in, c_out in zip(widths[:-1], widths[1:]):
                self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
                self.attentions.append(_spatial_transformer(c_in, heads, groups=1))
                self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
                self.attentions.append(_spatial_transformer(c_out, heads, groups=32))
            self.guidance_attention = _spatial_transformer(widths[-1], heads, groups=32)  # never used
            self.conv_out = nn.Conv2d(widths[-1], config.guidance_embedding_channels, kernel_size=3, padding=1)
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
        if dtype is not None:
            self.to(dtype)

    def check_inputs(self, condition: torch.Tensor) -> None:
        c = self.config.guidance_input_channels
        if condition.ndim != 5 or condition.shape[1] != c:
            raise ValueError(f"the guidance encoder takes [B, {c}, F, H, W] images in [0, 1]; got shape "
                             f"{list(condition.shape)}")
        h, w = condition.shape[-2:]
        if h % self.config.downscale or w % self.config.downscale:
            raise ValueError(f"guidance images must have sides divisible by {self.config.downscale} (the latent "
                             f"grid); got {h}x{w}")

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """``condition`` ``[B, 3, F, H, W]`` in [0, 1] → features ``[B, C, F, H/8, W/8]``
        (C = ``guidance_embedding_channels``). Frames are encoded ``frames_per_pass`` at a time
        (exact: every layer works frame by frame), so the full-resolution activations of a long
        video are never all held at once."""
        self.check_inputs(condition)
        b, c, f, h, w = condition.shape
        x = condition.transpose(1, 2).reshape(b * f, c, h, w)  # frames folded into the batch
        step = max(1, self.frames_per_pass)
        out = [self._encode_frames(x[i:i + step]) for i in range(0, b * f, step)]
        out = out[0] if len(out) == 1 else torch.cat(out)
        return out.view(b, f, *out.shape[1:]).transpose(1, 2)

    frames_per_pass: int = 2
    """Frames per pass through the encoder (a memory bound; any value gives the same features)."""

    def _encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(x), inplace=True)
        for block in self.blocks:
            x = F.silu(block(x), inplace=True)
        x = self.attentions[-1](x)  # the official forward uses only the last one
        return self.conv_out(x)
