"""Champ's denoising UNet (champ_spec.md §4): Stable Diffusion 1.5's UNet "inflated" to video as
in AnimateDiff (Guo et al. 2023), with a motion module after every resnet/attention pair and the
summed guidance features added right after ``conv_in`` (Champ §3.2).

Everything but the motion modules works on each frame on its own (convolutions, per-frame
GroupNorm — Champ's ``use_inflated_groupnorm`` — and spatial attention), so inside the model
frames are folded into the batch, ``[B*F, C, H, W]``, and diffusers' 2D building blocks
(``ResnetBlock2D``, ``Transformer2DModel``, ``Downsample2D``, ``Upsample2D``, ``Timesteps``,
``TimestepEmbedding``) are exactly the official layers; only the motion modules see frames. The
resnets and spatial transformers are subclasses (``ResnetBlock``, ``SpatialTransformer``) with
the same parameters and a leaner inference forward: the same arithmetic with fewer temporaries
(in-place activations and residuals, chunked feed-forward), checked against the official code by
the parity tests.

Parameter names equal the official checkpoint's: ``denoising_unet.pth`` holds every key without
``motion_modules`` (the keys of SD1.5's diffusers UNet), ``motion_module.pth`` the 21 motion
modules (two per down block, one in the mid block after its attention, three per up block).

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``models/unet_3d.py`` and ``models/unet_3d_blocks.py`` (commit 02e5533, MIT; adapted there from
guoyww/AnimateDiff); no code was copied.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .motion_module import (
    MotionModule,
    MotionModuleConfig,
    attend,
    check_feed_forward,
    check_plain_attention,
    feed_forward,
)

SD15_DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
SD15_MID_BLOCK_TYPE = "UNetMidBlock2DCrossAttn"

# SD UNet config keys that would change the architecture; Champ's UNet has none of them.
_UNSUPPORTED_SD_KEYS = {
    "class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "time_cond_proj_dim": None, "resnet_time_scale_shift": "default",
    "dual_cross_attention": False, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "transformer_layers_per_block": 1, "reverse_transformer_layers_per_block": None, "num_attention_heads": None,
    "attention_type": "default", "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
    "cross_attention_norm": None, "projection_class_embeddings_input_dim": None, "addition_time_embed_dim": None,
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "act_fn": "silu",
}


@dataclass(frozen=True)
class UNet3DConfig:
    """The denoising UNet's settings: Stable Diffusion 1.5's ``unet/config.json`` plus Champ's
    ``unet_additional_kwargs`` (configs/inference/inference.yaml). Build it with
    ``from_sd_unet_config``.

    Args:
        in_channels, out_channels (int, default 4): latent channels.
        block_out_channels (tuple[int, ...], default (320, 640, 1280, 1280)): width per level.
        layers_per_block (int, default 2): resnets per down block (up blocks have one more).
        attention_head_dim (tuple[int, ...], default 8 per level): in SD1.5's config this is the
            number of heads (a known diffusers misnomer); head width = width / heads.
        cross_attention_dim (int, default 768): width of the CLIP image token.
        norm_num_groups (int, default 32), norm_eps (float, default 1e-5): resnet/transformer norms.
        flip_sin_to_cos (bool, default True), freq_shift (int, default 0): timestep embedding.
        downsample_padding (int, default 1), mid_block_scale_factor (float, default 1.0).
        use_linear_projection, upcast_attention, center_input_sample (bool, default False).
        use_inflated_groupnorm (bool, default True): GroupNorm per frame (Champ's setting; the
            only one supported).
        use_motion_module (bool, default True): with False, the UNet of Champ's stage 1.
        motion_module_resolutions (tuple[int, ...], default (1, 2, 4, 8)): downscale factors
            (1 = the first level) whose blocks get motion modules.
        motion_module_mid_block (bool, default True), motion_module_decoder_only (bool, default
            False): where else motion modules go.
        motion_module (MotionModuleConfig): the modules' own settings.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_head_dim: tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    use_linear_projection: bool = False
    upcast_attention: bool = False
    center_input_sample: bool = False
    use_inflated_groupnorm: bool = True
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = True
    motion_module_decoder_only: bool = False
    motion_module: MotionModuleConfig = field(default_factory=MotionModuleConfig)

    def __post_init__(self):
        levels = len(self.block_out_channels)
        heads = self.attention_head_dim
        heads = (heads,) * levels if isinstance(heads, int) else tuple(heads)
        object.__setattr__(self, "attention_head_dim", heads)
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        object.__setattr__(self, "motion_module_resolutions", tuple(self.motion_module_resolutions))
        if levels != 4 or len(heads) != 4:
            raise ValueError(f"Champ's UNet has the four levels of Stable Diffusion 1.5; got block_out_channels="
                             f"{self.block_out_channels}, attention_head_dim={heads}")
        if not self.use_inflated_groupnorm:
            raise ValueError("only use_inflated_groupnorm=True (GroupNorm per frame, Champ's inference setting) "
                             "is supported")
        for width, h in zip(self.block_out_channels, heads):
            if width % self.norm_num_groups or width % h:
                raise ValueError(f"a UNet level of width {width} must be divisible by norm_num_groups="
                                 f"{self.norm_num_groups} and by its {h} attention heads")
            if self.use_motion_module:
                self.motion_module.check(width)

    @classmethod
    def from_sd_unet_config(cls, sd_config: dict, **champ_kwargs) -> "UNet3DConfig":
        """The config of Champ's UNet from SD1.5's ``unet/config.json`` (as a dict) and, in
        ``champ_kwargs``, any of Champ's additions (their defaults are the official inference
        settings). Raises ``ValueError`` naming the setting when the config is not an SD1.5-style
        UNet."""
        down = tuple(sd_config.get("down_block_types", SD15_DOWN_BLOCK_TYPES))
        up = tuple(sd_config.get("up_block_types", SD15_UP_BLOCK_TYPES))
        mid = sd_config.get("mid_block_type", SD15_MID_BLOCK_TYPE)
        if down != SD15_DOWN_BLOCK_TYPES or up != SD15_UP_BLOCK_TYPES or mid != SD15_MID_BLOCK_TYPE:
            raise ValueError(
                "Champ inflates the Stable Diffusion 1.5 UNet: expected down_block_types="
                f"{list(SD15_DOWN_BLOCK_TYPES)}, mid_block_type='{SD15_MID_BLOCK_TYPE}', up_block_types="
                f"{list(SD15_UP_BLOCK_TYPES)}; got {list(down)}, '{mid}', {list(up)}")
        for key, default in _UNSUPPORTED_SD_KEYS.items():
            value = sd_config.get(key, default)
            if value != default and not (key == "act_fn" and value == "swish"):
                raise ValueError(f"the SD UNet config sets {key}={value!r}; Champ's UNet needs {default!r}")
        only_cross = sd_config.get("only_cross_attention", False)
        if any(only_cross if isinstance(only_cross, (list, tuple)) else [only_cross]):
            raise ValueError("the SD UNet config sets only_cross_attention; Champ's UNet needs False")
        names = {f.name for f in fields(cls)}
        taken = {k: v for k, v in sd_config.items() if k in names and k not in _CHAMP_ONLY}
        unknown = sorted(set(champ_kwargs) - names)
        if unknown:
            raise TypeError(f"unknown UNet settings {unknown}; known: {sorted(names)}")
        if isinstance(champ_kwargs.get("motion_module"), dict):
            champ_kwargs["motion_module"] = MotionModuleConfig(**champ_kwargs["motion_module"])
        return cls(**{**taken, **champ_kwargs})

    def reference_unet_kwargs(self) -> dict:
        """Keyword arguments of diffusers' ``UNet2DConditionModel`` for the reference UNet (the
        same SD1.5 UNet, 2D)."""
        return dict(
            in_channels=self.in_channels, out_channels=self.out_channels, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, attention_head_dim=self.attention_head_dim,
            cross_attention_dim=self.cross_attention_dim, norm_num_groups=self.norm_num_groups,
            norm_eps=self.norm_eps, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift,
            downsample_padding=self.downsample_padding, mid_block_scale_factor=self.mid_block_scale_factor,
            use_linear_projection=self.use_linear_projection, upcast_attention=self.upcast_attention,
            center_input_sample=self.center_input_sample, down_block_types=SD15_DOWN_BLOCK_TYPES,
            up_block_types=SD15_UP_BLOCK_TYPES, mid_block_type=SD15_MID_BLOCK_TYPE, act_fn="silu")


# Settings that come from Champ's inference.yaml, never from the SD config.
_CHAMP_ONLY = {"use_inflated_groupnorm", "use_motion_module", "motion_module_resolutions", "motion_module_mid_block",
               "motion_module_decoder_only", "motion_module"}


class SpatialTransformer(Transformer2DModel):
    """diffusers' ``Transformer2DModel`` as Stable Diffusion 1.5 uses it (continuous input,
    ``BasicTransformerBlock``s with layer norms, GEGLU feed-forward; cross-attention optional),
    same parameters, with a leaner forward for inference: residuals are added in place, the
    feed-forward keeps fewer temporaries (``feed_forward``), a 1x1-conv ``proj_in``/``proj_out``
    runs as a matrix product on the tokens (the same weights), attention layers that keep
    diffusers' stock processor run ``attend`` directly, and cross-attention over a single token
    (Champ's CLIP image embedding) skips the softmax it does not need (``_one_token_attention``).
    Any other processor (the reference attention's) is called as diffusers would call it.
    ``forward(x, encoder_hidden_states)`` returns the output tensor ``[B, C, H, W]`` (no
    ``return_dict``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_input_continuous:
            raise ValueError("SpatialTransformer handles continuous (image) inputs only")
        for block in self.transformer_blocks:
            if block.norm_type != "layer_norm" or block.pos_embed is not None or block.only_cross_attention \
                    or block._chunk_size is not None:
                raise ValueError("SpatialTransformer handles Stable Diffusion's transformer blocks only")
            check_feed_forward(block.ff)
            for attn in (block.attn1, block.attn2):
                if attn is not None:
                    check_plain_attention(attn)

    @staticmethod
    def _attention(attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if type(attn.processor) is AttnProcessor2_0:
            return attend(attn, x, context)
        return attn.processor(attn, x, encoder_hidden_states=context)

    @staticmethod
    def _one_token_attention(attn: Attention, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention over a single token (Champ's CLIP image embedding): the softmax over
        one key is exactly 1, so every query gets that token's value, whatever the query:
        ``to_out(to_v(context))`` ``[B, 1, C]``, broadcast over the tokens by the caller."""
        return attn.to_out[0](attn.to_v(context))

    def _project(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.use_linear_projection:
            return layer(x)
        return F.linear(x, layer.weight.view(layer.out_channels, layer.in_channels), layer.bias)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
                ) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        x = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        x = self._project(self.proj_in, x)
        for block in self.transformer_blocks:
            x = self._attention(block.attn1, block.norm1(x)).add_(x)
            if block.attn2 is not None:
                if encoder_hidden_states.shape[1] == 1 and type(block.attn2.processor) is AttnProcessor2_0:
                    x = x.add_(self._one_token_attention(block.attn2, encoder_hidden_states))
                else:
                    x = self._attention(block.attn2, block.norm2(x), encoder_hidden_states).add_(x)
            x = feed_forward(block.ff, block.norm3(x)).add_(x)
        x = self._project(self.proj_out, x)
        return hidden_states + x.view(batch, height, width, -1).permute(0, 3, 1, 2)


class ResnetBlock(ResnetBlock2D):
    """diffusers' ``ResnetBlock2D`` in Stable Diffusion's setting (no up/down-sampling, the time
    embedding added between the convolutions), same parameters, with a leaner forward for
    inference: activations and sums in place, no division when ``output_scale_factor`` is 1."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.upsample is not None or self.downsample is not None or self.time_embedding_norm != "default" \
                or self.skip_time_act or not isinstance(self.nonlinearity, nn.SiLU):
            raise ValueError("ResnetBlock handles Stable Diffusion's resnets only")

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        x = self.conv1(F.silu(self.norm1(input_tensor), inplace=True))
        if self.time_emb_proj is not None and temb is not None:
            x += self.time_emb_proj(F.silu(temb))[:, :, None, None]
        x = self.conv2(self.dropout(F.silu(self.norm2(x), inplace=True)))
        x += self.conv_shortcut(input_tensor) if self.conv_shortcut is not None else input_tensor
        if self.output_scale_factor != 1.0:
            x /= self.output_scale_factor
        return x


def _spatial_transformer(channels: int, heads: int, config: UNet3DConfig) -> SpatialTransformer:
    return SpatialTransformer(num_attention_heads=heads, attention_head_dim=channels // heads, in_channels=channels,
                              num_layers=1, cross_attention_dim=config.cross_attention_dim,
                              norm_num_groups=config.norm_num_groups,
                              use_linear_projection=config.use_linear_projection,
                              upcast_attention=config.upcast_attention)


def _resnet(in_channels: int, out_channels: int, temb_channels: int, config: UNet3DConfig,
            output_scale_factor: float = 1.0) -> ResnetBlock:
    return ResnetBlock(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels,
                       eps=config.norm_eps, groups=config.norm_num_groups, output_scale_factor=output_scale_factor)


class DownBlock3D(nn.Module):
    """One encoder level: ``layers`` × (resnet → spatial transformer if ``cross_attention`` →
    motion module), then a stride-2 conv (``downsamplers.0.conv``) unless it is the last level.
    With ``cross_attention`` it is the official ``CrossAttnDownBlock3D``."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, heads: int, config: UNet3DConfig,
                 cross_attention: bool, add_downsample: bool, motion: MotionModuleConfig | None):
        super().__init__()
        layers = config.layers_per_block
        self.resnets = nn.ModuleList(
            [_resnet(out_channels if i else in_channels, out_channels, temb_channels, config) for i in range(layers)])
        self.attentions = nn.ModuleList(
            [_spatial_transformer(out_channels, heads, config) for _ in range(layers)] if cross_attention else [])
        self.motion_modules = nn.ModuleList([MotionModule(out_channels, motion) for _ in range(layers)]
                                            if motion else [])
        self.downsamplers = nn.ModuleList(
            [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=config.downsample_padding,
                          name="op")]) if add_downsample else None

    def forward(self, x, temb, encoder_hidden_states, num_frames):
        skips = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, encoder_hidden_states)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class UNetMidBlock3DCrossAttn(nn.Module):
    """The bottleneck: resnet → spatial transformer → motion module → resnet."""

    def __init__(self, channels: int, temb_channels: int, heads: int, config: UNet3DConfig,
                 motion: MotionModuleConfig | None):
        super().__init__()
        scale = config.mid_block_scale_factor
        self.attentions = nn.ModuleList([_spatial_transformer(channels, heads, config)])
        self.resnets = nn.ModuleList([_resnet(channels, channels, temb_channels, config, scale) for _ in range(2)])
        self.motion_modules = nn.ModuleList([MotionModule(channels, motion)] if motion else [])

    def forward(self, x, temb, encoder_hidden_states, num_frames):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, encoder_hidden_states)
        if len(self.motion_modules):
            x = self.motion_modules[0](x, num_frames)
        return self.resnets[1](x, temb)


class UpBlock3D(nn.Module):
    """One decoder level: ``layers + 1`` × (concatenate the matching skip → resnet → spatial
    transformer if ``cross_attention`` → motion module), then nearest ×2 upsampling and a conv
    (``upsamplers.0.conv``) unless it is the last level. With ``cross_attention`` it is the
    official ``CrossAttnUpBlock3D``."""

    def __init__(self, in_channels: int, prev_output_channels: int, out_channels: int, temb_channels: int, heads: int,
                 config: UNet3DConfig, cross_attention: bool, add_upsample: bool, motion: MotionModuleConfig | None):
        super().__init__()
        layers = config.layers_per_block + 1
        resnets = []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            below = prev_output_channels if i == 0 else out_channels
            resnets.append(_resnet(below + skip, out_channels, temb_channels, config))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            [_spatial_transformer(out_channels, heads, config) for _ in range(layers)] if cross_attention else [])
        self.motion_modules = nn.ModuleList([MotionModule(out_channels, motion) for _ in range(layers)]
                                            if motion else [])
        self.upsamplers = nn.ModuleList(
            [Upsample2D(out_channels, use_conv=True, out_channels=out_channels)]) if add_upsample else None

    def forward(self, x, skips, temb, encoder_hidden_states, num_frames, upsample_size=None):
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, encoder_hidden_states)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, output_size=upsample_size)
        return x


class UNet3DConditionModel(nn.Module):
    """Champ's denoising UNet.

    Args:
        config (UNet3DConfig): SD1.5 widths plus Champ's motion-module settings.
        device, dtype: where and in which precision the parameters are created (``"meta"``
            builds it without memory, for loading with ``assign=True``).
    """

    def __init__(self, config: UNet3DConfig = UNet3DConfig(), device=None, dtype=None):
        super().__init__()
        self.config = config
        widths, heads = config.block_out_channels, config.attention_head_dim
        levels = len(widths)
        temb_channels = widths[0] * 4
        use_mm = config.use_motion_module
        motion = config.motion_module
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.conv_in = nn.Conv2d(config.in_channels, widths[0], kernel_size=3, padding=1)
            self.time_proj = Timesteps(widths[0], config.flip_sin_to_cos, config.freq_shift)
            self.time_embedding = TimestepEmbedding(widths[0], temb_channels)

            self.down_blocks = nn.ModuleList()
            for i in range(levels):
                with_mm = (use_mm and 2 ** i in config.motion_module_resolutions
                           and not config.motion_module_decoder_only)
                self.down_blocks.append(DownBlock3D(
                    widths[max(i - 1, 0)], widths[i], temb_channels, heads[i], config,
                    cross_attention=SD15_DOWN_BLOCK_TYPES[i].startswith("CrossAttn"), add_downsample=i < levels - 1,
                    motion=motion if with_mm else None))

            self.mid_block = UNetMidBlock3DCrossAttn(widths[-1], temb_channels, heads[-1], config,
                                                     motion if use_mm and config.motion_module_mid_block else None)

            self.up_blocks = nn.ModuleList()
            rev_widths, rev_heads = widths[::-1], heads[::-1]
            for i in range(levels):
                with_mm = use_mm and 2 ** (levels - 1 - i) in config.motion_module_resolutions
                self.up_blocks.append(UpBlock3D(
                    rev_widths[min(i + 1, levels - 1)], rev_widths[max(i - 1, 0)], rev_widths[i], temb_channels,
                    rev_heads[i], config, cross_attention=SD15_UP_BLOCK_TYPES[i].startswith("CrossAttn"),
                    add_upsample=i < levels - 1, motion=motion if with_mm else None))

            self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, widths[0], eps=config.norm_eps)
            self.conv_act = nn.SiLU()
            self.conv_out = nn.Conv2d(widths[0], config.out_channels, kernel_size=3, padding=1)
        if dtype is not None:
            self.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def max_frames(self) -> int | None:
        """The most frames one call may hold (the motion modules' position encoding)."""
        for module in self.modules():
            if isinstance(module, MotionModule):
                return module.max_frames
        return None

    def check_inputs(self, sample, encoder_hidden_states, guidance_features) -> None:
        c = self.config
        if sample.ndim != 5 or sample.shape[1] != c.in_channels:
            raise ValueError(f"the denoising UNet takes latents [B, {c.in_channels}, F, h, w]; got "
                             f"{list(sample.shape)}")
        b, _, f, h, w = sample.shape
        limit = self.max_frames
        if limit is not None and f > limit:
            raise ValueError(f"a window of {f} frames is longer than the {limit} frame positions of Champ's motion "
                             f"modules; use windows of at most {limit} frames (the official setting is 24)")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] not in (b, b * f) \
                or encoder_hidden_states.shape[2] != c.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must be [B, tokens, {c.cross_attention_dim}] with B={b}; got "
                             f"{list(encoder_hidden_states.shape)}")
        want = [b, c.block_out_channels[0], f, h, w]
        if guidance_features is not None and list(guidance_features.shape) not in (want, [1, *want[1:]]):
            raise ValueError(f"guidance features must be {want} (the summed guidance-encoder outputs at the latent "
                             f"size; batch 1 is shared by every sample); got {list(guidance_features.shape)}")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                guidance_features: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the model output for one window.

        Args:
            sample: noisy latents ``[B, 4, F, h, w]``.
            timestep: an int/float, a 0-d tensor or one per sample ``[B]``.
            encoder_hidden_states: the CLIP image token(s) ``[B, 1, 768]`` (zeros for the
                unconditional half of a CFG batch).
            guidance_features: summed guidance-encoder outputs ``[B, 320, F, h, w]``, added after
                ``conv_in``; with batch 1 they are added to every sample (both halves of a CFG
                batch use the same features: no need to repeat them); ``None`` adds nothing.

        Returns:
            ``[B, 4, F, h, w]`` (with Champ's scheduler, a v-prediction).
        """
        self.check_inputs(sample, encoder_hidden_states, guidance_features)
        b, _, f, h, w = sample.shape
        fold = lambda t: t.transpose(1, 2).reshape(b * f, *t.shape[1:2], *t.shape[3:])  # noqa: E731
        x = fold(sample)
        if self.config.center_input_sample:
            x = 2 * x - 1.0

        factor = 2 ** (len(self.up_blocks) - 1)
        forward_upsample_size = h % factor != 0 or w % factor != 0

        t = timestep if torch.is_tensor(timestep) else torch.tensor(
            [timestep], dtype=torch.float64 if isinstance(timestep, float) else torch.int64, device=sample.device)
        t = t.reshape(-1).to(sample.device).expand(b) if t.numel() == 1 else t.to(sample.device)
        emb = self.time_embedding(self.time_proj(t).to(dtype=self.dtype))
        emb = emb.repeat_interleave(f, dim=0)  # one row per frame
        context = encoder_hidden_states
        if context.shape[0] != b * f:
            context = context.repeat_interleave(f, dim=0)

        x = self.conv_in(x)
        if guidance_features is not None:  # added in place, frame by frame (no folded copy)
            x.view(b, f, *x.shape[1:]).add_(guidance_features.transpose(1, 2).to(x.dtype))

        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, emb, context, f)
            skips += block_skips

        x = self.mid_block(x, emb, context, f)

        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:] if forward_upsample_size and i < len(self.up_blocks) - 1 else None
            x = block(x, block_skips, emb, context, f, upsample_size=size)

        x = self.conv_out(F.silu(self.conv_norm_out(x), inplace=True))
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2)
