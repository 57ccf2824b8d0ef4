"""Champ's animation sampler: the official long-video inference (champ_spec.md §2, §5-7) in plain
torch, without ComfyUI.

What runs, in order (``animate``):

1. **Reference.** The reference image is resized to the output size the way diffusers'
   ``VaeImageProcessor`` does (PIL Lanczos, aspect ratio not kept), mapped to [-1, 1] and
   encoded with the VAE (latent *mean* x 0.18215); separately it is resized to 224x224 (PIL
   bicubic) and normalised for CLIP (``CLIPImageProcessor`` defaults). The CLIP image embedding
   is the one cross-attention token.
2. **Reference attention.** The 2D reference UNet runs once at t = 0 and fills the banks the
   denoising UNet's self-attention reads (``reference_attention.py``).
3. **Denoising.** DDIM as the official inference builds it: 1000 training steps, *linear* betas
   0.00085 -> 0.012 (the official quirk; ``beta_schedule="scaled_linear"`` is the option the
   models were trained with), zero-SNR rescaling, trailing spacing, v-prediction, eta 0. Each
   step runs the UNet on 24-frame windows starting every 20 frames, the last one wrapping to
   the start of the video, sums the predictions per frame, divides by the count (skipped when
   ``guidance_scale <= 1``: the official quirk), then applies classifier-free guidance with the
   official unconditional branch (zero CLIP token, no reference attention, guidance features
   kept) and one DDIM step on the whole sequence. Only one window (x2 for CFG) is on the
   compute device per UNet call.
4. **Decoding.** The VAE decodes ``latents / 0.18215`` a few frames at a time; frames are
   ``(x / 2 + 0.5)`` clamped to [0, 1] and, optionally, resized bilinearly back to the
   reference image's size (as ``inference.py`` does).

Noise: the official pipeline draws the initial latents with diffusers' ``randn_tensor``: one
``torch.randn`` of shape ``[1, 4, F, H/8, W/8]`` on the *generator's* device, in the image
encoder's dtype, scaled by ``init_noise_sigma`` (1.0 for DDIM). ``inference.py`` seeds a CUDA
generator; here the generator is a CPU ``torch.Generator`` seeded with ``seed`` (the default,
``noise_device="cpu"``), so a seed gives the same video on every machine and the same latents
the official pipeline draws when it is handed a CPU generator (as the parity goldens are).
``noise_device="compute"`` draws them with a generator on the compute device instead, which
reproduces ``inference.py`` run on the same kind of GPU.

Long videos (``stitching``, ``nodes/types.py: Stitching``): ``aggregate`` is the official
sampling above with the plan's window and overlap. ``chain`` (first-frame chaining, as UniAnimate's
README tip and Liu et al. 2024, arXiv 2405.16393) generates the video clip by clip
(``clip_ranges``: neighbours share ``overlap`` frames): the reference bank is written once and read
by every clip, so the appearance never drifts from the reference; in each clip after the first the
shared frames are pinned to the previous clip's final latents: before every UNet call they are
set to those clean latents noised to the current timestep with the clip's own noise for those
frames (``background.noised``; at the zero-SNR first timestep, alpha_bar = 0, that is the noise
itself), and after the last step to the clean latents. They stay in the UNet's window, so the
motion modules carry the motion across the seam. Clip ``c``'s noise comes from its own CPU
generator seeded with ``clip_seed(seed, c)`` (``seed`` itself for clip 0, so a video of one clip
is the ``aggregate`` result; ``numpy.random.SeedSequence([seed, c])`` for the others), so no clip
needs the video's whole noise tensor and a clip's noise does not depend on the video's length.
Each clip is decoded, resized, passed through ``clip_stream`` (seams, colour: the stitch stage's
``ClipStream``) and handed to ``frame_sink``; with a sink, only one clip's latents and frames are
held, whatever the length (guidance features too, when they come from a lazy source with
``take(frames)``, see ``lazy_guidance.py``).

Background plates (``background``, ``background.py``): after each of the first
``round(fraction * steps)`` steps the latents outside the person are blended with the plate's
latents noised to the step's target timestep; the plate is VAE-encoded a clip (or a few frames) at
a time.

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``pipelines/pipeline_aggregation.py``, ``pipelines/context.py`` and ``inference.py`` (commit
02e5533, MIT); no code was copied. Scheduling uses diffusers' ``DDIMScheduler``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .background import BackgroundGuide, blend, check_background, keep_mask, noised, plate_pixels
from ..types import MAX_CLIP_FRAMES, clip_ranges
from .clips import FrameOutput, NewFramesStream, check_plan, clip_seed, release_host_memory
from .reference_attention import ReferenceAttention

LATENT_SCALE = 0.18215
VAE_SCALE = 8
CONTEXT_FRAMES, CONTEXT_OVERLAP = 24, 4  # the official window and overlap
MAX_WINDOW = MAX_CLIP_FRAMES  # rows of the motion modules' position encoding
GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
# A fixed linear map from SD1.5's 4 latent channels to RGB in [-1, 1] (for progress previews).
LATENT_RGB = torch.tensor([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                           [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]])

ModuleSource = Callable[..., nn.Module]
"""``get(name, memory_required=0)`` -> the module, resident on its compute device. Names:
``vae``, ``image_encoder``, ``reference_unet``, ``denoising_unet``,
``guidance_encoder_<type>``."""
ProgressFn = Callable[..., None]
FrameSink = Callable[[torch.Tensor], None]
"""``sink(frames)``: the next final frames ``[n, H, W, 3]`` (float32 in [0, 1], CPU), in order."""
LatentSink = Callable[[range, torch.Tensor], None]
"""``sink(frames, latents)``: the final latents ``[1, 4, n, h, w]`` (CPU, float32) of the video frames
``frames`` (a ``range``): once per clip in ``chain`` mode (the pinned frames again), once for the
whole video in ``aggregate`` mode."""


def module_source(modules: Mapping[str, nn.Module]) -> ModuleSource:
    """A ``ModuleSource`` over a plain dict of modules (tests, scripts)."""
    def get(name: str, memory_required: int = 0) -> nn.Module:
        return modules[name]
    return get


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


# ---------------------------------------------------------------------------- scheduling

def make_scheduler(beta_schedule: str = "linear"):
    """diffusers' ``DDIMScheduler`` as Champ's inference configures it (``"linear"`` betas: the
    official quirk; ``"scaled_linear"``: what training used)."""
    from diffusers import DDIMScheduler

    if beta_schedule not in ("linear", "scaled_linear"):
        raise ValueError(f"beta_schedule must be 'linear' (official inference) or 'scaled_linear' (training); "
                         f"got '{beta_schedule}'")
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=beta_schedule,
                         clip_sample=False, set_alpha_to_one=True, steps_offset=1, prediction_type="v_prediction",
                         timestep_spacing="trailing", rescale_betas_zero_snr=True)


def context_windows(frames: int, context: int = CONTEXT_FRAMES, overlap: int = CONTEXT_OVERLAP) -> list[list[int]]:
    """The official ``uniform`` context schedule at step 0, stride 1, closed loop: windows of
    ``context`` frames starting every ``context - overlap`` frames while the start is inside the
    video; frame indices wrap modulo ``frames``. One window when the video fits."""
    if frames <= context:
        return [list(range(frames))]
    step = context - overlap
    if step < 1:
        raise ValueError(f"overlap_frames ({overlap}) must be smaller than context_frames ({context})")
    return [[k % frames for k in range(start, start + context)] for start in range(0, frames, step)]


# ------------------------------------------------------------------------- preprocessing

def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _pil_resize(frames: np.ndarray, width: int, height: int, resample) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample=resample)) for f in frames])


def prepare_guidance_map(images: torch.Tensor, width: int, height: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A guidance video ``[F, H, W, 3]`` in [0, 1] (a ComfyUI IMAGE batch) -> the encoder input
    ``[1, 3, F, height, width]`` in [0, 1], as the official code makes it from PNG files: the
    ``mask`` (``[F, H, W]`` or ``[F, H, W, 3]``, kept where > 0) blacks out the background first
    (the semantic map), then PIL's bicubic resize of the 8-bit image, then /255. Frames already at
    the target size are used as they are (identical for images read from 8-bit files)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"a guidance map must be an IMAGE batch [frames, H, W, 3]; got {list(images.shape)}")
    x = images.detach().float().cpu()
    if mask is not None:
        m = mask.detach().float().cpu()
        m = m[..., None] if m.ndim == 3 else m
        if m.shape[0] == 1 and x.shape[0] > 1:
            m = m.expand(x.shape[0], *m.shape[1:])
        if m.shape[:3] != x.shape[:3]:
            raise ValueError(f"the semantic mask {list(mask.shape)} must have the semantic map's frames and size "
                             f"{list(x.shape[:3])} (or be one frame of that size)")
        x = torch.where(m > 0, x, torch.zeros(()))
    if tuple(x.shape[1:3]) != (height, width):
        from PIL import Image

        x = torch.from_numpy(_pil_resize(_to_uint8(x), width, height, Image.BICUBIC)).float() / 255.0
    return x.permute(3, 0, 1, 2)[None].contiguous()


def prepare_reference(image: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A reference image ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1] -> ``(vae_pixels
    [1, 3, height, width] in [-1, 1], clip_pixels [1, 3, 224, 224])`` as the official pipeline
    makes them from a PIL image: Lanczos resize + [-1, 1] for the VAE (``VaeImageProcessor``),
    bicubic 224x224 resize + CLIP normalisation (``CLIPImageProcessor``) for the image encoder."""
    from PIL import Image

    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"the reference must be one image; got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"the reference must be an RGB image [H, W, 3]; got {list(image.shape)}")
    pixels = _to_uint8(image)[None]
    vae = torch.from_numpy(_pil_resize(pixels, width, height, Image.LANCZOS)).float() / 255.0
    vae = (vae * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()
    clip = torch.from_numpy(_pil_resize(pixels, CLIP_SIZE, CLIP_SIZE, Image.BICUBIC)).float() / 255.0
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    clip = (clip.permute(0, 3, 1, 2) - mean) / std
    return vae, clip.contiguous()


def check_size(width: int, height: int) -> None:
    if width < 8 or height < 8 or width % VAE_SCALE or height % VAE_SCALE:
        fix = lambda v: max(VAE_SCALE, int(round(v / VAE_SCALE)) * VAE_SCALE)  # noqa: E731
        raise ValueError(f"width and height must be multiples of {VAE_SCALE} (the latent grid); got {width}x{height}"
                         f" — try {fix(width)}x{fix(height)}")


# ------------------------------------------------------------------------------ guidance

def check_guidance_maps(maps: Mapping[str, torch.Tensor], width: int, height: int) -> int:
    """The number of frames of the guidance ``maps``; ``ValueError`` for a bad size, no map, an
    unknown map type or maps of different lengths."""
    check_size(width, height)
    if not maps:
        raise ValueError("at least one guidance map is needed (depth, normal, semantic_map or dwpose)")
    unknown = [k for k in maps if k not in GUIDANCE_TYPES]
    if unknown:
        raise ValueError(f"unknown guidance map(s) {unknown}; Champ has encoders for {list(GUIDANCE_TYPES)}")
    counts = {k: int(v.shape[0]) for k, v in maps.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every guidance map needs the same number of frames; got {counts}")
    frames = next(iter(counts.values()))
    if frames < 1:
        raise ValueError("the guidance maps hold no frames; at least 1 frame is needed")
    return frames


@torch.no_grad()
def encode_guidance(get: ModuleSource, maps: Mapping[str, torch.Tensor], width: int, height: int,
                    strengths: Mapping[str, float] | None = None, semantic_mask: torch.Tensor | None = None,
                    chunk_frames: int = 16, progress: ProgressFn | None = None) -> torch.Tensor:
    """Run each guidance map through its encoder and sum the features (official: every
    strength 1). ``maps``: type (``depth``, ``normal``, ``semantic_map``, ``dwpose``) ->
    IMAGE batch ``[F, H, W, 3]``. Frames are encoded ``chunk_frames`` at a time (exact: the
    encoder works frame by frame). Returns ``[1, C, F, height/8, width/8]`` on the CPU, in float32.
    """
    frames = check_guidance_maps(maps, width, height)
    strengths = dict(strengths or {})
    chunk_frames = max(1, int(chunk_frames))
    total, done = len(maps) * math.ceil(frames / chunk_frames), 0
    out = None
    for kind, images in maps.items():
        x = prepare_guidance_map(images, width, height, semantic_mask if kind == "semantic_map" else None)
        parts = []
        for start in range(0, frames, chunk_frames):
            encoder = get(f"guidance_encoder_{kind}", memory_required=_encoder_bytes(x, chunk_frames))
            device, dtype = _device_dtype(encoder)
            parts.append(encoder(x[:, :, start:start + chunk_frames].to(device, dtype)).float().cpu())
            done += 1
            if progress is not None:
                progress(done, total)
        feats = torch.cat(parts, dim=2) * float(strengths.get(kind, 1.0))
        out = feats if out is None else out + feats
    return out


def _encoder_bytes(x: torch.Tensor, frames: int) -> int:
    return int(frames * x.shape[-1] * x.shape[-2] * 16 * 4 * 4)


# ------------------------------------------------------------------------------ sampling

@dataclass
class AnimationResult:
    """``frames`` ``[F, H, W, 3]`` float32 in [0, 1] on the CPU; ``latents`` ``[1, 4, F, h, w]``
    (the final latents, unscaled SD latents x 0.18215) on the CPU. Both are None when the frames
    went to a ``frame_sink`` in ``chain`` mode (``latents`` is kept in ``aggregate`` mode, which
    holds them anyway). ``clips``: the frame ranges denoised together (windows are not listed)."""

    frames: torch.Tensor | None
    latents: torch.Tensor | None
    clips: list = field(default_factory=list)


def feature_frames(guidance_features) -> int:
    """Frames of guidance features: a ``[1, C, F, h, w]`` tensor or a lazy source with ``shape``."""
    return int(guidance_features.shape[2])


def take_features(guidance_features, frames: Sequence[int]) -> torch.Tensor:
    """Features ``[1, C, n, h, w]`` of the video frames ``frames`` (a list or range, may wrap),
    from a tensor or a lazy source (``take(frames)``, e.g. ``lazy_guidance.LazyGuidance``)."""
    if torch.is_tensor(guidance_features):
        return guidance_features[:, :, list(frames)]
    return guidance_features.take(frames)


def check_inputs(reference: torch.Tensor, guidance_features, width: int, height: int, steps: int,
                 context_frames: int, context_overlap: int) -> None:
    check_size(width, height)
    if guidance_features.ndim != 5 or guidance_features.shape[0] != 1:
        raise ValueError(f"guidance features must be [1, C, frames, height/8, width/8]; got "
                         f"{list(guidance_features.shape)}")
    if guidance_features.shape[2] < 1:
        raise ValueError("the guidance features hold no frames; at least 1 frame is needed")
    want = (height // VAE_SCALE, width // VAE_SCALE)
    if tuple(guidance_features.shape[-2:]) != want:
        raise ValueError(f"the guidance features were encoded for {guidance_features.shape[-1] * VAE_SCALE}x"
                         f"{guidance_features.shape[-2] * VAE_SCALE} but the animation is {width}x{height}; encode "
                         f"the guidance at the animation's size")
    if not 1 <= context_frames <= MAX_WINDOW:
        raise ValueError(f"context_frames must be between 1 and {MAX_WINDOW} (the motion modules' position encoding "
                         f"holds {MAX_WINDOW} frames); got {context_frames}. The official setting is 24")
    if not 0 <= context_overlap < context_frames:
        raise ValueError(f"context_overlap must be between 0 and context_frames - 1 ({context_frames - 1}); "
                         f"got {context_overlap}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    if reference.ndim not in (3, 4) or reference.shape[-1] != 3:
        raise ValueError(f"the reference must be an RGB image [H, W, 3]; got {list(reference.shape)}")


def initial_latents(shape, seed: int, dtype: torch.dtype, device, noise_device: str = "cpu") -> torch.Tensor:
    """The official ``randn_tensor`` draw with a seeded generator (see the module docstring)."""
    gen_device = torch.device("cpu") if noise_device == "cpu" else torch.device(device)
    generator = torch.Generator(device=gen_device).manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def latent_preview(latents: torch.Tensor, frame: int = 0):
    """A PIL image of one frame of SD latents ``[1, 4, F, h, w]`` through ``LATENT_RGB``."""
    from PIL import Image

    x = latents[0, :, frame].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", x, LATENT_RGB)
    return Image.fromarray(((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy())


def _unet_bytes(window: int, h: int, w: int, batch: int, dtype: torch.dtype) -> int:
    """A rough activation estimate for one UNet call (for ComfyUI's memory manager)."""
    size = torch.finfo(dtype).bits // 8
    return int(batch * window * h * w * 320 * size * 24)


def _alpha_prev(scheduler, t) -> float:
    """The cumulative alpha DDIM's ``step`` at timestep ``t`` steps to (diffusers' rule)."""
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return float(scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod)


@torch.no_grad()
def encode_plate(get: ModuleSource, guide: BackgroundGuide, frames: Sequence[int], width: int, height: int,
                 chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The plate's latents ``[1, 4, n, h, w]`` (VAE mean x 0.18215, like the reference; ``chunk``
    frames per VAE call) and the blending weight ``[1, 1, n, h, w]`` (``background.keep_mask``)
    of the video frames ``frames``; float32 on the CPU."""
    frames, chunk, latents, keep = list(frames), max(1, int(chunk)), [], []
    for start in range(0, len(frames), chunk):  # full-size pixels and masks of one chunk at a time
        pixels = plate_pixels(guide, frames[start:start + chunk], width, height)
        vae = get("vae", memory_required=int(pixels.shape[0] * width * height * 128 * 4))
        device, dtype = _device_dtype(vae)
        latents.append((vae.encode(pixels.to(device, dtype)).latent_dist.mean * LATENT_SCALE).float().cpu())
        keep.append(keep_mask(guide, frames[start:start + chunk], width, height))
    return torch.cat(latents).transpose(0, 1)[None], torch.cat(keep, dim=2)


@torch.no_grad()
def animate(get: ModuleSource, reference: torch.Tensor, guidance_features, width: int, height: int,
            steps: int = 20, guidance_scale: float = 3.5, seed: int = 42, context_frames: int = CONTEXT_FRAMES,
            context_overlap: int = CONTEXT_OVERLAP, beta_schedule: str = "linear", noise_device: str = "cpu",
            decode_chunk: int = 4, resize_to_reference: bool = True, progress: ProgressFn | None = None,
            reference_bank_dtype: torch.dtype | None = torch.float16, *, stitching=None,
            clip_stream=None,
            frame_sink: FrameSink | None = None, latent_sink: LatentSink | None = None,
            background: BackgroundGuide | None = None) -> AnimationResult:
    """Animate ``reference`` along ``guidance_features`` with Champ (the official sampling).

    Args:
        get: the models (``module_source(dict)`` or the node's cache-backed source).
        reference: ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1].
        guidance_features: ``[1, C, F, height/8, width/8]`` (``encode_guidance``), any device; or
            a lazy source with ``shape`` and ``take(frames)`` (``lazy_guidance.LazyGuidance``).
        width, height: generation size, multiples of 8 (official 512x512).
        steps: DDIM steps (official 20). guidance_scale: CFG scale (official 3.5; <= 1 turns
            CFG off and keeps the official no-division quirk).
        seed: the initial noise (see the module docstring; ``noise_device``; ``clip_seed``).
        context_frames, context_overlap: temporal aggregation windows (official 24 / 4, at most
            32 frames); replaced by ``stitching``'s ``clip_frames`` / ``overlap`` when given.
        beta_schedule: ``"linear"`` (official inference) or ``"scaled_linear"`` (training).
        decode_chunk: frames per VAE decode call (1 = the official frame-by-frame decode).
        resize_to_reference: resize the frames back to the reference image's size (bilinear),
            as the official ``inference.py`` does; otherwise ``width x height``.
        progress: ``progress(done, total, preview=PIL image)`` after every denoising step (and
            without a preview after every decoded chunk); ``total`` is ``steps``, or clips x
            ``steps`` in ``chain`` mode. Whatever it raises stops the run (ComfyUI's Cancel).
        reference_bank_dtype: the reference bank's precision (official: fp16 whatever the models).
        stitching: a ``Stitching`` (``nodes/types.py``): ``aggregate`` (official) or ``chain``
            (clip by clip, see the module docstring). None: ``aggregate`` with ``context_*``.
        clip_stream: ``push(clip [n, H, W, 3]) -> final frames`` and ``finish() -> frames`` (the
            stitch stage's ``ClipStream``: seams, colour), ``chain`` mode only; default
            ``NewFramesStream`` (each frame once, no blending).
        frame_sink: called with the final frames in order as they are ready (a clip at a time
            in ``chain`` mode, ``decode_chunk`` frames at a time in ``aggregate`` mode); the
            result then holds no frames.
        latent_sink: called with ``(frame range, latents [1, 4, n, h, w])`` per clip (``chain``)
            or once (``aggregate``).
        background: a ``BackgroundGuide``: keep its plate behind the person (``background.py``).
    """
    chain = stitching is not None and stitching.mode == "chain"
    if stitching is not None:
        if stitching.mode not in ("aggregate", "chain"):
            raise ValueError(f"stitching mode must be 'aggregate' or 'chain'; got '{stitching.mode}'")
        context_frames, context_overlap = int(stitching.clip_frames), int(stitching.overlap)
    check_inputs(reference, guidance_features, width, height, steps, context_frames, context_overlap)
    ref_h, ref_w = (reference.shape[-3], reference.shape[-2])
    frames = feature_frames(guidance_features)
    if background is not None:
        check_background(background, frames)
    h, w = height // VAE_SCALE, width // VAE_SCALE
    vae_pixels, clip_pixels = prepare_reference(reference, width, height)

    # 1. the CLIP token and the reference latent
    image_encoder = get("image_encoder", memory_required=0)
    device, dtype = _device_dtype(image_encoder)
    clip = image_encoder(clip_pixels.to(device, dtype)).image_embeds[:, None]  # [1, 1, C]
    vae = get("vae", memory_required=int(width * height * 128 * 4))
    vae_device, vae_dtype = _device_dtype(vae)
    ref_latents = vae.encode(vae_pixels.to(vae_device, vae_dtype)).latent_dist.mean * LATENT_SCALE

    # 2. the schedule and the plan: windows over one sequence (aggregate) or clips (chain)
    scheduler = make_scheduler(beta_schedule)
    scheduler.set_timesteps(steps)
    if chain:
        ranges = clip_ranges(frames, context_frames, context_overlap)
        check_plan(ranges, frames)
        longest = max(len(r) for r in ranges)
    else:
        windows = context_windows(frames, context_frames, context_overlap)
        longest = max(len(win) for win in windows)
        ranges = [range(frames)]

    cfg = guidance_scale > 1.0
    batch = 2 if cfg else 1
    unet = get("denoising_unet", memory_required=_unet_bytes(longest, h, w, batch, dtype))
    reference_unet = get("reference_unet", memory_required=_unet_bytes(1, h, w, 1, dtype))
    unet_device, unet_dtype = _device_dtype(unet)
    context = torch.cat([torch.zeros_like(clip), clip]) if cfg else clip
    run = _Run(get=get, scheduler=scheduler, context=context.to(unet_device, unet_dtype), cfg=cfg,
               guidance_scale=guidance_scale, batch=batch, unet_bytes=_unet_bytes(longest, h, w, batch, dtype),
               device=unet_device, dtype=unet_dtype, noise_dtype=clip.dtype, steps=steps,
               total=len(ranges) * steps, progress=progress, background=background,
               blend_steps=background.blend_steps(steps) if background is not None else 0, width=width,
               height=height, decode_chunk=decode_chunk,
               resize=(ref_h, ref_w) if resize_to_reference and (ref_h, ref_w) != (height, width) else None)
    noise_at = "cpu" if noise_device == "cpu" else device
    with ReferenceAttention(reference_unet, unet, bank_dtype=reference_bank_dtype) as attention:
        # written once: every window and every clip reads the same reference features
        attention.write(ref_latents.to(*_device_dtype(reference_unet)), clip.to(*_device_dtype(reference_unet)))
        with attention.reading(uncond_first_half=cfg):
            if not chain:
                # the initial noise (official: the image encoder's dtype, init_noise_sigma = 1 for DDIM)
                latents = initial_latents((1, 4, frames, h, w), seed, clip.dtype, noise_at, noise_device) \
                    * scheduler.init_noise_sigma
                latents = _aggregate(run, guidance_features, latents.to(unet_device), windows)
            else:  # decoded and streamed clip by clip
                output = FrameOutput(run.resize, clip_stream or NewFramesStream(ranges), frame_sink)
                kept = _chain(run, guidance_features, ranges, seed, noise_at, noise_device, output, latent_sink,
                              keep_latents=frame_sink is None)
    if not chain:
        return _finish_aggregate(run, latents, frame_sink, latent_sink)
    video = output.finish()
    return AnimationResult(frames=video, latents=torch.cat(kept, dim=2) if kept else None, clips=ranges)


@dataclass
class _Run:
    """What every window and clip of one ``animate`` call shares."""

    get: ModuleSource
    scheduler: object
    context: torch.Tensor
    cfg: bool
    guidance_scale: float
    batch: int
    unet_bytes: int
    device: torch.device
    dtype: torch.dtype
    noise_dtype: torch.dtype
    steps: int
    total: int
    progress: ProgressFn | None
    background: BackgroundGuide | None
    blend_steps: int
    width: int
    height: int
    decode_chunk: int
    resize: tuple[int, int] | None

    def plate(self, frames: Sequence[int]):
        """The plate latents and blending weight of ``frames`` on the compute device."""
        plate, keep = encode_plate(self.get, self.background, frames, self.width, self.height, self.decode_chunk)
        return plate.to(self.device), keep.to(self.device)


def _aggregate(run: _Run, guidance_features, latents: torch.Tensor, windows: list[list[int]]) -> torch.Tensor:
    """Champ's temporal aggregation over the whole sequence (champ_spec.md §7)."""
    scheduler, frames, cfg = run.scheduler, latents.shape[2], run.cfg
    if run.blend_steps:
        noise = latents.clone()
        plate, keep = run.plate(range(frames))
    for i, t in enumerate(scheduler.timesteps):
        unet = run.get("denoising_unet", memory_required=run.unet_bytes)
        total = torch.zeros((run.batch, *latents.shape[1:]), dtype=latents.dtype, device=run.device)
        count = torch.zeros((1, 1, frames, 1, 1), dtype=latents.dtype, device=run.device)
        for win in windows:
            x = latents[:, :, win].to(run.device, run.dtype).repeat(run.batch, 1, 1, 1, 1)
            g = take_features(guidance_features, win).to(run.device, run.dtype)  # broadcast over the CFG halves
            pred = unet(x, t, run.context, g).to(latents.dtype)
            # index_add_ sums repeated indices (a wrapped window never repeats a frame,
            # but a short video in a long window could)
            total.index_add_(2, torch.tensor(win, device=run.device), pred)
            count[:, :, win] += 1
        if cfg:
            uncond, cond = (total / count).chunk(2)
            pred = uncond + run.guidance_scale * (cond - uncond)
        else:
            pred = total  # official quirk: no division without CFG
        out = scheduler.step(pred, t, latents, eta=0.0)
        latents = out.prev_sample
        if i < run.blend_steps:
            latents = blend(latents, plate, noise, keep, _alpha_prev(scheduler, t))
        if run.progress is not None:
            run.progress(i + 1, run.steps, preview=latent_preview(out.pred_original_sample))
    return latents


def _finish_aggregate(run: _Run, latents: torch.Tensor, frame_sink, latent_sink) -> AnimationResult:
    """Decode the sequence: chunk by chunk to ``frame_sink``, or whole (the original path)."""
    final = latents.float().cpu()
    if latent_sink is not None:
        latent_sink(range(latents.shape[2]), final)
    if frame_sink is not None:
        output = FrameOutput(run.resize, None, frame_sink)
        for video in decode_chunks(run.get, latents, run.decode_chunk):
            output.put(video)
            if run.progress is not None:
                run.progress(run.steps, run.steps)
        return AnimationResult(frames=None, latents=final, clips=[range(latents.shape[2])])
    video = decode(run.get, latents, decode_chunk=run.decode_chunk, progress=run.progress, steps=run.steps)
    if run.resize is not None:
        video = torch.nn.functional.interpolate(video, size=run.resize, mode="bilinear", align_corners=False)
    return AnimationResult(frames=video.permute(0, 2, 3, 1).contiguous(), latents=final,
                           clips=[range(latents.shape[2])])


def _chain(run: _Run, guidance_features, ranges: list[range], seed: int, noise_at, noise_device: str,
           output: FrameOutput, latent_sink: LatentSink | None, keep_latents: bool) -> list[torch.Tensor]:
    """First-frame chaining, clip by clip (module docstring); returns the new frames' latents
    per clip when ``keep_latents``."""
    scheduler, steps, kept = run.scheduler, run.steps, []
    tail = None  # the previous clip's final latents of the frames it shares with this clip
    for c, r in enumerate(ranges):
        noise = (initial_latents((1, 4, len(r), run.height // VAE_SCALE, run.width // VAE_SCALE), clip_seed(seed, c),
                                 run.noise_dtype, noise_at, noise_device) * scheduler.init_noise_sigma).to(run.device)
        k = 0 if tail is None else tail.shape[2]
        g = take_features(guidance_features, r).to(run.device, run.dtype)  # broadcast over the CFG halves
        if run.blend_steps:
            plate, keep = run.plate(r)
        latents = noise.clone()
        for i, t in enumerate(scheduler.timesteps):
            unet = run.get("denoising_unet", memory_required=run.unet_bytes)
            if k:  # pinned: the previous clip's final latents noised to this timestep with this clip's noise
                latents[:, :, :k] = noised(tail, noise[:, :, :k], float(scheduler.alphas_cumprod[int(t)]))
            x = latents.to(run.device, run.dtype).repeat(run.batch, 1, 1, 1, 1)
            pred = unet(x, t, run.context, g).to(latents.dtype)
            if run.cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + run.guidance_scale * (cond - uncond)
            out = scheduler.step(pred, t, latents, eta=0.0)
            latents = out.prev_sample
            if i < run.blend_steps:
                latents = blend(latents, plate, noise, keep, _alpha_prev(scheduler, t))
            if run.progress is not None:
                run.progress(c * steps + i + 1, run.total, preview=latent_preview(out.pred_original_sample))
        if k:
            latents[:, :, :k] = tail
        if latent_sink is not None:
            latent_sink(r, latents.float().cpu())
        if keep_latents:
            kept.append(latents[:, :, k:].float().cpu())
        nxt = ranges[c + 1].start if c + 1 < len(ranges) else r.stop
        tail = latents[:, :, nxt - r.start:].clone() if nxt < r.stop else None
        del noise, g
        video = decode(run.get, latents, decode_chunk=run.decode_chunk)
        del latents
        if run.progress is not None:
            run.progress((c + 1) * steps, run.total)
        output.put(video)  # resized, through the clip stream, to the sink
        del video
        release_host_memory()
    return kept


@torch.no_grad()
def decode_chunks(get: ModuleSource, latents: torch.Tensor, decode_chunk: int = 4):
    """Yield ``[n, 3, H, W]`` float32 frames in [0, 1] on the CPU, ``decode_chunk`` frames of the
    ``[1, 4, F, h, w]`` latents at a time (official: ``(x / 2 + 0.5)`` clamped)."""
    frames, h, w = latents.shape[2], latents.shape[3], latents.shape[4]
    decode_chunk = max(1, int(decode_chunk))
    for start in range(0, frames, decode_chunk):
        vae = get("vae", memory_required=int(decode_chunk * h * w * 64 * 128 * 4))
        device, dtype = _device_dtype(vae)
        z = latents[0, :, start:start + decode_chunk].transpose(0, 1) / LATENT_SCALE
        x = vae.decode(z.to(device, dtype)).sample
        yield (x / 2 + 0.5).clamp(0, 1).float().cpu()


@torch.no_grad()
def decode(get: ModuleSource, latents: torch.Tensor, decode_chunk: int = 4, progress: ProgressFn | None = None,
           steps: int = 0) -> torch.Tensor:
    """Decode ``[1, 4, F, h, w]`` latents ``decode_chunk`` frames at a time -> ``[F, 3, H, W]``
    float32 in [0, 1] on the CPU (official: ``(x / 2 + 0.5)`` clamped)."""
    out = []
    for frames in decode_chunks(get, latents, decode_chunk):
        out.append(frames)
        if progress is not None:
            progress(steps, steps)
    return torch.cat(out)
