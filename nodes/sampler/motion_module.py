"""AnimateDiff motion modules as Champ uses them (champ_spec.md §4).

A motion module mixes information across the frames of a window: at every spatial location the
``F`` feature vectors of the window attend to each other (temporal self-attention), after a
sinusoidal frame-position encoding has been added. The encoding has 32 rows, so a window holds
at most 32 frames (Champ's windows hold 24).

Layout and key names follow the official ``motion_module.pth`` (AnimateDiff ``mm_sd_v15_v2``
layout): ``<block>.motion_modules.<i>.temporal_transformer.`` followed by ``norm``, ``proj_in``,
``transformer_blocks.<j>.attention_blocks.<k>.{to_q, to_k, to_v, to_out.0, pos_encoder.pe}``,
``transformer_blocks.<j>.norms.<k>``, ``transformer_blocks.<j>.ff.net.{0.proj, 2}``,
``transformer_blocks.<j>.ff_norm`` and ``proj_out``.

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``models/motion_module.py`` (commit 02e5533, MIT; itself adapted from guoyww/AnimateDiff); no code
was copied. Attention and feed-forward layers are diffusers' own. Tensors inside the UNet keep
frames folded into the batch, ``(B*F, C, H, W)`` with frames fastest-varying inside each sample,
so every module here takes ``num_frames``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

# The only attention kind Champ's motion modules use (``attention_block_types`` in inference.yaml).
TEMPORAL_SELF = "Temporal_Self"


@dataclass(frozen=True)
class MotionModuleConfig:
    """Champ's ``motion_module_kwargs`` (configs/inference/inference.yaml).

    Args:
        num_attention_heads (int, default 8): heads of every temporal attention.
        num_transformer_block (int, default 1): temporal transformer blocks per module.
        attention_block_types (tuple[str, ...], default two ``"Temporal_Self"``): one attention
            layer per entry in each block; only temporal self-attention exists in Champ.
        temporal_position_encoding (bool, default True): add the sinusoidal frame encoding.
        temporal_position_encoding_max_len (int, default 32): rows of the encoding = the most
            frames one window may hold.
        temporal_attention_dim_div (int, default 1): head width = channels / heads / this.
        norm_num_groups (int, default 32): groups of the module's input GroupNorm.
    """

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = (TEMPORAL_SELF, TEMPORAL_SELF)
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1
    norm_num_groups: int = 32

    def check(self, channels: int) -> None:
        """Raise ``ValueError`` when a module of ``channels`` channels cannot be built."""
        bad = [t for t in self.attention_block_types if t != TEMPORAL_SELF]
        if bad:
            raise ValueError(f"motion modules support only '{TEMPORAL_SELF}' attention (Champ uses nothing else); "
                             f"got attention_block_types={list(self.attention_block_types)}")
        step = self.num_attention_heads * self.temporal_attention_dim_div
        if channels % step or channels % self.norm_num_groups or channels % 2:
            raise ValueError(f"a motion module of {channels} channels needs channels divisible by heads x "
                             f"temporal_attention_dim_div ({step}), by norm_num_groups ({self.norm_num_groups}) "
                             f"and by 2 (sin/cos pairs of the position encoding)")


class TemporalPositionEncoding(nn.Module):
    """Sinusoidal frame positions, ``pe[0, f, 2i] = sin(f / 10000^(2i/C))`` and the cosine at
    ``2i+1``, added to the tokens of a window (Vaswani et al. 2017). ``pe`` is a saved buffer
    (it is in ``motion_module.pth``), of shape ``[1, max_len, C]``."""

    def __init__(self, channels: int, max_len: int = 32):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
        pe = torch.zeros(1, max_len, channels)
        pe[0, :, 0::2] = torch.sin(position * freq)
        pe[0, :, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    @property
    def max_len(self) -> int:
        return self.pe.shape[1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``[N, F, C]`` (F frames) → the same plus the first F position rows."""
        frames = tokens.shape[1]
        if frames > self.max_len:
            raise ValueError(
                f"Champ's motion modules encode at most {self.max_len} frame positions, but a window of "
                f"{frames} frames reached them. Use windows of at most {self.max_len} frames (the official "
                f"setting is 24 frames with an overlap of 4).")
        return tokens + self.pe[:, :frames].to(tokens.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across the frames of each spatial location (AnimateDiff's
    ``VersatileAttention`` in its temporal mode): tokens ``[B*F, HW, C]`` are regrouped to
    ``[B*HW, F, C]``, the frame positions are added, and diffusers' attention runs on them.
    q/k/v have no bias; ``to_out.0`` has one."""

    def __init__(self, channels: int, heads: int, head_dim: int, position_encoding_max_len: int | None):
        super().__init__(query_dim=channels, heads=heads, dim_head=head_dim, bias=False)
        self.pos_encoder = (TemporalPositionEncoding(channels, position_encoding_max_len)
                            if position_encoding_max_len else None)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # noqa: D102
        rows, tokens, channels = hidden_states.shape
        batch = rows // num_frames
        x = hidden_states.reshape(batch, num_frames, tokens, channels).transpose(1, 2)
        x = x.reshape(batch * tokens, num_frames, channels)
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        x = super().forward(x)
        x = x.reshape(batch, tokens, num_frames, channels).transpose(1, 2)
        return x.reshape(rows, tokens, channels)


class TemporalTransformerBlock(nn.Module):
    """Pre-norm residual temporal attentions (``attention_blocks`` with ``norms``), then a
    GEGLU feed-forward (``ff`` with ``ff_norm``)."""

    def __init__(self, channels: int, heads: int, head_dim: int, num_attention_layers: int,
                 position_encoding_max_len: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, heads, head_dim, position_encoding_max_len)
             for _ in range(num_attention_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(num_attention_layers)])
        self.ff = FeedForward(channels, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states), num_frames) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm per frame → linear ``proj_in`` → temporal transformer blocks → linear
    ``proj_out``, added to the input (the module is a residual)."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        heads = config.num_attention_heads
        head_dim = channels // heads // config.temporal_attention_dim_div
        inner = heads * head_dim
        max_len = config.temporal_position_encoding_max_len if config.temporal_position_encoding else None
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, head_dim, len(config.attention_block_types), max_len)
             for _ in range(config.num_transformer_block)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        rows, channels, height, width = hidden_states.shape
        residual = hidden_states
        x = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(rows, height * width, channels)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x)
        return x.reshape(rows, height, width, -1).permute(0, 3, 1, 2) + residual


class MotionModule(nn.Module):
    """One AnimateDiff "Vanilla" motion module (``VanillaTemporalModule``): a temporal
    transformer whose ``proj_out`` starts at zero, so a module without loaded weights passes
    its input through unchanged.

    Args:
        channels (int): feature channels at the module's place in the UNet.
        config (MotionModuleConfig): Champ's motion-module settings.
        device, dtype: where and in which precision the parameters are created.
    """

    def __init__(self, channels: int, config: MotionModuleConfig = MotionModuleConfig(), device=None, dtype=None):
        super().__init__()
        config.check(channels)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.temporal_transformer = TemporalTransformer3DModel(channels, config)
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)
        if dtype is not None:
            self.to(dtype)

    @property
    def max_frames(self) -> int | None:
        """The most frames a window may hold (the position encoding's rows), or ``None``."""
        encoder = self.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder
        return encoder.max_len if encoder is not None else None

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``hidden_states`` ``[B*F, C, H, W]`` (frames folded into the batch) → same shape."""
        if hidden_states.shape[0] % num_frames:
            raise ValueError(f"the motion module got {hidden_states.shape[0]} frame rows, not a multiple of "
                             f"num_frames={num_frames}")
        return self.temporal_transformer(hidden_states, num_frames)

