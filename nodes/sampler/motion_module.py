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
was copied. Attention and feed-forward layers are diffusers' own modules (their parameters and
names); their forward passes here are the leaner ``attend``/``sdpa_heads``/``feed_forward``
below (the same arithmetic with fewer temporaries; the denoising UNet's spatial blocks use them
too). Tensors inside the UNet keep frames folded into the batch, ``(B*F, C, H, W)`` with frames
fastest-varying inside each sample, so every module here takes ``num_frames``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
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


def attend(attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of ``hidden_states`` ``[B, L, C]`` over ``context`` ``[B, S, C']``
    (itself when ``None``) with ``attn``'s projections: what diffusers' ``AttnProcessor2_0``
    computes for a plain ``Attention`` (no norms, mask, residual or output rescaling, dropout 0
    as in every attention of Champ), without its per-call signature inspection and its final
    division by ``rescale_output_factor`` = 1."""
    context = hidden_states if context is None else context
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    return attn.to_out[0](sdpa_heads(q, k, v, attn.heads))


def sdpa_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` of projected ``q`` ``[B, L, C]`` and ``k``, ``v``
    ``[B, S, C]`` split into ``heads`` heads; returns ``[B, L, C]`` (heads merged)."""
    batch, length, channels = q.shape
    split = lambda t: t.view(batch, -1, heads, channels // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(batch, length, channels)


def check_plain_attention(attn: Attention) -> None:
    """Raise ``ValueError`` when ``attn`` has a feature ``attend`` leaves out."""
    extra = [name for name in ("spatial_norm", "group_norm", "norm_q", "norm_k", "norm_cross")
             if getattr(attn, name, None) not in (None, False)]
    if extra or attn.residual_connection or attn.rescale_output_factor != 1.0 or attn.to_out[1].p != 0:
        raise ValueError(f"attend() handles plain attention only; this layer has {extra or 'residual/rescaling'}")


def check_feed_forward(ff: FeedForward) -> None:
    """Raise ``ValueError`` when ``ff`` is not the GEGLU feed-forward ``feed_forward`` computes."""
    net = ff.net
    if len(net) != 3 or not isinstance(net[0], GEGLU) or not isinstance(net[2], nn.Linear) or net[1].p != 0:
        raise ValueError("feed_forward() handles diffusers' GEGLU FeedForward without dropout only")


FEED_FORWARD_CHUNK_BYTES = 64 << 20
"""Most bytes of GEGLU intermediates (value and gate) ``feed_forward`` holds at once; rows beyond
that go through chunk by chunk. (At Champ's size, 48 frames of 64x64 latents, the unchunked
intermediates of a top-level feed-forward take 1 GiB in fp16.)"""


def feed_forward(ff: FeedForward, hidden_states: torch.Tensor) -> torch.Tensor:
    """diffusers' GEGLU ``FeedForward`` (``net.0.proj`` → value * GELU(gate) → ``net.2``) with
    fewer temporaries: the value and gate halves of ``net.0.proj`` are two matrix products
    (slices of its weight, no copy), GELU and the product are done in place, and the tokens go
    through in chunks of rows whose intermediates fit ``FEED_FORWARD_CHUNK_BYTES`` (each row is
    independent: the same result, without an intermediate four times the input's size)."""
    proj, out_layer = ff.net[0].proj, ff.net[2]
    half = proj.out_features // 2
    w_value, w_gate = proj.weight[:half], proj.weight[half:]
    b_value, b_gate = (None, None) if proj.bias is None else (proj.bias[:half], proj.bias[half:])

    def rows(x):
        value = F.linear(x, w_value, b_value)
        return out_layer(value.mul_(torch.ops.aten.gelu_(F.linear(x, w_gate, b_gate))))

    x = hidden_states.reshape(-1, hidden_states.shape[-1])
    step = max(1, FEED_FORWARD_CHUNK_BYTES // (2 * half * x.element_size()))
    if x.shape[0] <= step:
        out = rows(x)
    else:
        out = x.new_empty(x.shape[0], out_layer.out_features)
        for start in range(0, x.shape[0], step):
            out[start:start + step] = rows(x[start:start + step])
    return out.view(*hidden_states.shape[:-1], out.shape[-1])


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

    def rows(self, frames: int, dtype: torch.dtype) -> torch.Tensor:
        """The first ``frames`` rows ``[frames, C]`` in ``dtype``."""
        if frames > self.max_len:
            raise ValueError(
                f"Champ's motion modules encode at most {self.max_len} frame positions, but a window of "
                f"{frames} frames reached them. Use windows of at most {self.max_len} frames (the official "
                f"setting is 24 frames with an overlap of 4).")
        return self.pe[0, :frames].to(dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``[N, F, C]`` (F frames) → the same plus the first F position rows."""
        return tokens + self.rows(tokens.shape[1], tokens.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across the frames of each spatial location (AnimateDiff's
    ``VersatileAttention`` in its temporal mode): tokens ``[B*F, HW, C]`` are regrouped to
    ``[B*HW, F, C]`` with the frame positions added (one pass), attended with
    ``F.scaled_dot_product_attention`` (diffusers' ``Attention`` holds the projections), and put
    back as ``[B*F, HW, C]`` with the heads merged (one copy). q/k/v have no bias; ``to_out.0``
    has one."""

    def __init__(self, channels: int, heads: int, head_dim: int, position_encoding_max_len: int | None):
        super().__init__(query_dim=channels, heads=heads, dim_head=head_dim, bias=False)
        check_plain_attention(self)
        self.pos_encoder = (TemporalPositionEncoding(channels, position_encoding_max_len)
                            if position_encoding_max_len else None)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # noqa: D102
        rows, tokens, channels = hidden_states.shape
        batch = rows // num_frames
        x = hidden_states.view(batch, num_frames, tokens, channels).transpose(1, 2)
        if self.pos_encoder is not None:  # regrouped and encoded in one pass
            x = torch.add(x, self.pos_encoder.rows(num_frames, x.dtype),
                          out=x.new_empty(batch, tokens, num_frames, channels))
        x = x.reshape(batch * tokens, num_frames, channels)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        out = F.scaled_dot_product_attention(*(t.view(batch * tokens, num_frames, self.heads, -1).transpose(1, 2)
                                               for t in (q, k, v)))
        # [B*HW, heads, F, d] -> frames back into rows, heads merged: [B*F, HW, C] (one copy)
        out = out.view(batch, tokens, self.heads, num_frames, -1).permute(0, 3, 1, 2, 4)
        return self.to_out[0](out.reshape(rows, tokens, channels))


class TemporalTransformerBlock(nn.Module):
    """Pre-norm residual temporal attentions (``attention_blocks`` with ``norms``), then a
    GEGLU feed-forward (``ff`` with ``ff_norm``); residuals are added in place."""

    def __init__(self, channels: int, heads: int, head_dim: int, num_attention_layers: int,
                 position_encoding_max_len: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, heads, head_dim, position_encoding_max_len)
             for _ in range(num_attention_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(num_attention_layers)])
        self.ff = FeedForward(channels, activation_fn="geglu")
        check_feed_forward(self.ff)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states), num_frames).add_(hidden_states)
        return feed_forward(self.ff, self.ff_norm(hidden_states)).add_(hidden_states)


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
        return residual + x.view(rows, height, width, -1).permute(0, 3, 1, 2)


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

