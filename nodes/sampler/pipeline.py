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

Written for Marionette from the spec and a reading of fudan-generative-vision/champ
``pipelines/pipeline_aggregation.py``, ``pipelines/context.py`` and ``inference.py`` (commit
02e5533, MIT); no code was copied. Scheduling uses diffusers' ``DDIMScheduler``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from .reference_attention import ReferenceAttention

LATENT_SCALE = 0.18215
VAE_SCALE = 8
CONTEXT_FRAMES, CONTEXT_OVERLAP = 24, 4  # the official window and overlap
MAX_WINDOW = 32  # rows of the motion modules' position encoding
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

@torch.no_grad()
def encode_guidance(get: ModuleSource, maps: Mapping[str, torch.Tensor], width: int, height: int,
                    strengths: Mapping[str, float] | None = None, semantic_mask: torch.Tensor | None = None,
                    chunk_frames: int = 16, progress: ProgressFn | None = None) -> torch.Tensor:
    """Run each guidance map through its encoder and sum the features (official: every
    strength 1). ``maps``: type (``depth``, ``normal``, ``semantic_map``, ``dwpose``) ->
    IMAGE batch ``[F, H, W, 3]``. Frames are encoded ``chunk_frames`` at a time (exact: the
    encoder works frame by frame). Returns ``[1, C, F, height/8, width/8]`` on the CPU, in float32.
    """
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
    (the final latents, unscaled SD latents x 0.18215) on the CPU."""

    frames: torch.Tensor
    latents: torch.Tensor


def check_inputs(reference: torch.Tensor, guidance_features: torch.Tensor, width: int, height: int, steps: int,
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


@torch.no_grad()
def animate(get: ModuleSource, reference: torch.Tensor, guidance_features: torch.Tensor, width: int, height: int,
            steps: int = 20, guidance_scale: float = 3.5, seed: int = 42, context_frames: int = CONTEXT_FRAMES,
            context_overlap: int = CONTEXT_OVERLAP, beta_schedule: str = "linear", noise_device: str = "cpu",
            decode_chunk: int = 4, resize_to_reference: bool = True, progress: ProgressFn | None = None,
            reference_bank_dtype: torch.dtype | None = torch.float16) -> AnimationResult:
    """Animate ``reference`` along ``guidance_features`` with Champ (the official sampling).

    Args:
        get: the models (``module_source(dict)`` or the node's cache-backed source).
        reference: ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1].
        guidance_features: ``[1, C, F, height/8, width/8]`` (``encode_guidance``), any device.
        width, height: generation size, multiples of 8 (official 512x512).
        steps: DDIM steps (official 20). guidance_scale: CFG scale (official 3.5; <= 1 turns
            CFG off and keeps the official no-division quirk).
        seed: the initial noise (see the module docstring; ``noise_device``).
        context_frames, context_overlap: temporal aggregation windows (official 24 / 4, at most
            32 frames).
        beta_schedule: ``"linear"`` (official inference) or ``"scaled_linear"`` (training).
        decode_chunk: frames per VAE decode call (1 = the official frame-by-frame decode).
        resize_to_reference: resize the frames back to the reference image's size (bilinear),
            as the official ``inference.py`` does; otherwise ``width x height``.
        progress: ``progress(step, steps, preview=PIL image)`` after every denoising step (and
            ``progress(steps, steps)`` after every decoded chunk); whatever it raises stops the
            run (ComfyUI's Cancel).
        reference_bank_dtype: the reference bank's precision (official: fp16 whatever the models).
    """
    check_inputs(reference, guidance_features, width, height, steps, context_frames, context_overlap)
    ref_h, ref_w = (reference.shape[-3], reference.shape[-2])
    frames = int(guidance_features.shape[2])
    h, w = height // VAE_SCALE, width // VAE_SCALE
    vae_pixels, clip_pixels = prepare_reference(reference, width, height)

    # 1. the CLIP token and the reference latent
    image_encoder = get("image_encoder", memory_required=0)
    device, dtype = _device_dtype(image_encoder)
    clip = image_encoder(clip_pixels.to(device, dtype)).image_embeds[:, None]  # [1, 1, C]
    vae = get("vae", memory_required=int(width * height * 128 * 4))
    vae_device, vae_dtype = _device_dtype(vae)
    ref_latents = vae.encode(vae_pixels.to(vae_device, vae_dtype)).latent_dist.mean * LATENT_SCALE

    # 2. the initial noise (official: the image encoder's dtype, init_noise_sigma = 1 for DDIM)
    scheduler = make_scheduler(beta_schedule)
    scheduler.set_timesteps(steps)
    latents = initial_latents((1, 4, frames, h, w), seed, clip.dtype, "cpu" if noise_device == "cpu" else device,
                              noise_device) * scheduler.init_noise_sigma

    cfg = guidance_scale > 1.0
    windows = context_windows(frames, context_frames, context_overlap)
    longest = max(len(win) for win in windows)
    batch = 2 if cfg else 1

    unet = get("denoising_unet", memory_required=_unet_bytes(longest, h, w, batch, dtype))
    reference_unet = get("reference_unet", memory_required=_unet_bytes(1, h, w, 1, dtype))
    unet_device, unet_dtype = _device_dtype(unet)
    context = torch.cat([torch.zeros_like(clip), clip]) if cfg else clip
    context = context.to(unet_device, unet_dtype)
    latents = latents.to(unet_device)  # the whole sequence is small: [1, 4, F, h, w]
    with ReferenceAttention(reference_unet, unet, bank_dtype=reference_bank_dtype) as attention:
        attention.write(ref_latents.to(*_device_dtype(reference_unet)), clip.to(*_device_dtype(reference_unet)))
        with attention.reading(uncond_first_half=cfg):
            for i, t in enumerate(scheduler.timesteps):
                unet = get("denoising_unet", memory_required=_unet_bytes(longest, h, w, batch, dtype))
                total = torch.zeros((batch, *latents.shape[1:]), dtype=latents.dtype, device=unet_device)
                count = torch.zeros((1, 1, frames, 1, 1), dtype=latents.dtype, device=unet_device)
                for win in windows:
                    x = latents[:, :, win].to(unet_device, unet_dtype).repeat(batch, 1, 1, 1, 1)
                    g = guidance_features[:, :, win].to(unet_device, unet_dtype).repeat(batch, 1, 1, 1, 1)
                    pred = unet(x, t, context, g).to(latents.dtype)
                    # index_add_ sums repeated indices (a wrapped window never repeats a frame,
                    # but a short video in a long window could)
                    total.index_add_(2, torch.tensor(win, device=unet_device), pred)
                    count[:, :, win] += 1
                if cfg:
                    uncond, cond = (total / count).chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                else:
                    pred = total  # official quirk: no division without CFG
                out = scheduler.step(pred, t, latents, eta=0.0)
                latents = out.prev_sample
                if progress is not None:
                    progress(i + 1, steps, preview=latent_preview(out.pred_original_sample))
    video = decode(get, latents, decode_chunk=decode_chunk, progress=progress, steps=steps)
    if resize_to_reference and (ref_h, ref_w) != (height, width):
        video = torch.nn.functional.interpolate(video, size=(ref_h, ref_w), mode="bilinear", align_corners=False)
    return AnimationResult(frames=video.permute(0, 2, 3, 1).contiguous(), latents=latents.float().cpu())


@torch.no_grad()
def decode(get: ModuleSource, latents: torch.Tensor, decode_chunk: int = 4, progress: ProgressFn | None = None,
           steps: int = 0) -> torch.Tensor:
    """Decode ``[1, 4, F, h, w]`` latents ``decode_chunk`` frames at a time -> ``[F, 3, H, W]``
    float32 in [0, 1] on the CPU (official: ``(x / 2 + 0.5)`` clamped)."""
    frames, h, w = latents.shape[2], latents.shape[3], latents.shape[4]
    decode_chunk = max(1, int(decode_chunk))
    out = []
    for start in range(0, frames, decode_chunk):
        vae = get("vae", memory_required=int(decode_chunk * h * w * 64 * 128 * 4))
        device, dtype = _device_dtype(vae)
        z = latents[0, :, start:start + decode_chunk].transpose(0, 1) / LATENT_SCALE
        x = vae.decode(z.to(device, dtype)).sample
        out.append((x / 2 + 0.5).clamp(0, 1).float().cpu())
        if progress is not None:
            progress(steps, steps)
    return torch.cat(out)
