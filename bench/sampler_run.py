"""One measured run of a Champ sampler in this (fresh) process, for bench/sampler.py; prints one
JSON object on stdout.

    python bench/sampler_run.py ours     --release DIR --inputs X.npz [--latents-out Y.npy]
    $CHAMP_GOLDEN_PYTHON bench/sampler_run.py official --release DIR --inputs X.npz --champ-code CODE
    python bench/sampler_run.py ours-full --frames 24        # full-size random weights (CUDA)
    $CHAMP_GOLDEN_PYTHON bench/sampler_run.py official-full --frames 24 --champ-code CODE

(CODE: the official champ code at 02e5533; tests/golden/make_champ_goldens.py says how to set
up it and its virtualenv.)

``ours`` runs Marionette's ``encode_guidance`` + ``animate`` (nodes/sampler/pipeline.py); ``official``
runs the official ``MultiGuidance2LongVideoPipeline`` of fudan-generative-vision/champ (02e5533)
the way tests/golden/make_champ_goldens.py builds it (its helpers are reused; nothing of
Marionette is imported on that side, so it runs in that script's virtualenv). Both take the
same inputs (``--inputs``: the reference and guidance videos as uint8 arrays) and the same
fixture release, and both runs cover the same work: guidance encoding, CLIP and VAE encoding of
the reference, the reference UNet, every denoising step over every window, VAE decoding.

What is measured, after the models are loaded and one short warm-up run (2 frames, 1 step):

* ``wall_s``: ``time.perf_counter`` around the run (CUDA synchronised);
* ``cpu_s``: ``time.process_time`` around it (CPU time of every thread of the process);
* CPU memory, ``peak_rss_growth_mib``: the process's peak resident set during the run minus its
  resident set at the start. The peak is the kernel's ``VmHWM`` after resetting it at the start
  (``/proc/self/clear_refs``), so a short spike is not missed. bench/sampler.py runs both sides
  with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed, so large tensors are returned to the system when
  freed and the resident set follows live memory (without it glibc raises the threshold as it
  goes and keeps freed blocks, which makes the figure depend on what ran before). Where
  ``clear_refs`` cannot be written, ``ru_maxrss`` growth is used (an upper bound) and
  ``memory_measure`` says so;
* CUDA: ``peak_cuda_growth_mib``, ``torch.cuda.max_memory_allocated`` during the run minus the
  memory allocated at its start (the models), and ``peak_cuda_mib`` (with the models).

``ours-full``/``official-full``: both pipelines at full size with random weights (SD1.5 widths,
the official guidance encoders, SD's VAE, a ViT-L/14 CLIP tower): 512x512, fp16, the given
frames; only meaningful on CUDA.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")
# Full-size configurations (random weights): SD1.5's UNet and VAE, CLIP ViT-L/14's vision tower.
SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SD_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
CLIP_VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                    patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu")
FULL_SIZE, FULL_STEPS = 512, 20


# ------------------------------------------------------------------------------ measuring

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def measure(run, device):
    """Run ``run()`` once and return ``(its result, figures)`` (see the module docstring)."""
    import torch

    gc.collect()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        cuda0 = torch.cuda.memory_allocated()
    rss0 = _status_kib("VmRSS")
    hwm = rss0 is not None and _reset_peak_rss()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run()
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {"wall_s": wall, "cpu_s": cpu, "page_faults": usage.ru_minflt - usage0.ru_minflt, "device": str(device)}
    if hwm:
        figures.update(peak_rss_growth_mib=(_status_kib("VmHWM") - rss0) / 1024, rss_start_mib=rss0 / 1024,
                       memory_measure="VmHWM (reset at the start) - VmRSS at the start")
    else:
        figures.update(peak_rss_growth_mib=(usage.ru_maxrss - usage0.ru_maxrss) / 1024,
                       memory_measure="ru_maxrss growth (upper bound: clear_refs not writable)")
    if cuda:
        figures.update(peak_cuda_growth_mib=(torch.cuda.max_memory_allocated() - cuda0) / 2**20,
                       peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20, models_cuda_mib=cuda0 / 2**20)
    return result, figures


# ------------------------------------------------------------------------------ inputs

def load_inputs(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(reference uint8 [H, W, 3], {type: uint8 [F, H, W, 3]})`` as bench/sampler.py wrote them."""
    data = np.load(path)
    return data["reference"], {g: data[f"guidance_{g}"] for g in GUIDANCE_TYPES}


def random_inputs(frames: int, size: int, seed: int = 2024):
    """Inputs in the style of the parity goldens: random 8x8-pixel blocks (uint8), the reference
    5/4 as tall as wide (so both pipelines resize it)."""
    rng = np.random.default_rng(seed)
    up = lambda a, axes: np.repeat(np.repeat(a, 8, axis=axes[0]), 8, axis=axes[1])  # noqa: E731
    reference = up(rng.integers(0, 256, ((size + size // 4) // 8, size // 8, 3), dtype=np.uint8), (0, 1))
    maps = {g: up(rng.integers(0, 256, (frames, size // 8, size // 8, 3), dtype=np.uint8), (1, 2))
            for g in GUIDANCE_TYPES}
    return reference, maps


# ------------------------------------------------------------------------------ Marionette

def _marionette():
    sys.path.insert(0, str(ROOT / "bench"))
    import common

    common.import_pack()
    from marionette.nodes.sampler import champ_files, pipeline

    return champ_files, pipeline


def _ours_call(pipeline, get, reference, maps, size, steps, cfg, seed, decode_chunk=None):
    import torch

    ref = torch.from_numpy(reference).float() / 255.0
    images = {g: torch.from_numpy(m).float() / 255.0 for g, m in maps.items()}
    extra = {} if decode_chunk is None else {"decode_chunk": decode_chunk}

    def run():
        features = pipeline.encode_guidance(get, images, size, size)
        return pipeline.animate(get, ref, features, size, size, steps=steps, guidance_scale=cfg, seed=seed,
                                resize_to_reference=False, **extra)
    return run


def run_ours(args) -> dict:
    import torch

    champ_files, pipeline = _marionette()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    reference, maps = load_inputs(args.inputs)
    size = maps["depth"].shape[1]
    from marionette.nodes.sampler.champ_files import ChampRelease

    release = ChampRelease.from_folder(args.release)
    get = pipeline.module_source({c: champ_files.load(release, c, device=device) for c in champ_files.COMPONENTS})
    _ours_call(pipeline, get, reference, {g: m[:2] for g, m in maps.items()}, size, 1, args.cfg, args.seed)()
    result, figures = measure(_ours_call(pipeline, get, reference, maps, size, args.steps, args.cfg, args.seed,
                                         args.decode_chunk), device)
    if args.latents_out:
        np.save(args.latents_out, result.latents.numpy())
    return figures


def run_ours_full(args) -> dict:
    import torch

    _, pipeline = _marionette()
    from diffusers import AutoencoderKL
    from marionette.nodes.sampler.guidance_encoder import GuidanceEncoder
    from marionette.nodes.sampler.reference_attention import build_reference_unet
    from marionette.nodes.sampler.unet3d import UNet3DConditionModel, UNet3DConfig
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = UNet3DConfig.from_sd_unet_config(SD15_UNET)
    with torch.device(device):  # random weights drawn where they are used
        modules = {"denoising_unet": UNet3DConditionModel(config), "reference_unet": build_reference_unet(config),
                   "vae": AutoencoderKL(**SD_VAE),
                   "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VIT_L14)),
                   **{f"guidance_encoder_{g}": GuidanceEncoder() for g in GUIDANCE_TYPES}}
    modules = {k: m.to(device, dtype).eval().requires_grad_(False) for k, m in modules.items()}
    get = pipeline.module_source(modules)
    reference, maps = random_inputs(args.frames, args.size)
    _ours_call(pipeline, get, reference, {g: m[:2] for g, m in maps.items()}, args.size, 1, args.cfg, args.seed)()
    _, figures = measure(_ours_call(pipeline, get, reference, maps, args.size, args.steps, args.cfg, args.seed),
                         device)
    return figures


# ------------------------------------------------------------------------------ official

def _official_imports(champ_code):
    sys.path.insert(0, str(Path(champ_code).resolve()))
    spec = importlib.util.spec_from_file_location("make_champ_goldens", ROOT / "tests/golden/make_champ_goldens.py")
    goldens = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(goldens)
    return goldens


def _official_pipe(champ_code, modules):
    from diffusers import DDIMScheduler
    from omegaconf import OmegaConf
    from pipelines.pipeline_aggregation import MultiGuidance2LongVideoPipeline

    cfg = OmegaConf.load(Path(champ_code) / "configs" / "inference" / "inference.yaml")
    sched_kwargs = OmegaConf.to_container(cfg.noise_scheduler_kwargs)
    if cfg.enable_zero_snr:
        sched_kwargs.update(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    pipe = MultiGuidance2LongVideoPipeline(**modules, scheduler=DDIMScheduler(**sched_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _official_call(pipe, reference, maps, size, steps, cfg, seed, device, keep: dict):
    import torch
    from PIL import Image

    image = Image.fromarray(reference)
    group = {g: [Image.fromarray(f) for f in m] for g, m in maps.items()}
    frames = maps["depth"].shape[0]

    def record(step, timestep, latents):
        keep["latents"] = latents

    def run():
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return pipe(image, group, size, size, frames, num_inference_steps=steps, guidance_scale=cfg,
                    generator=generator, callback=record, callback_steps=1).videos
    return run


def _official_unet_kwargs(champ_code):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(champ_code) / "configs" / "inference" / "inference.yaml")
    return OmegaConf.to_container(cfg.unet_additional_kwargs), OmegaConf.to_container(cfg.guidance_encoder_kwargs)


def run_official(args) -> dict:
    import torch

    goldens = _official_imports(args.champ_code)
    from diffusers import AutoencoderKL
    from models.guidance_encoder import GuidanceEncoder
    from models.unet_2d_condition import UNet2DConditionModel
    from models.unet_3d import UNet3DConditionModel
    from transformers import CLIPVisionModelWithProjection

    torch.set_grad_enabled(False)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    release = Path(args.release)
    ckpt = release / "champ"
    load = lambda p: torch.load(str(p), map_location="cpu", weights_only=True)  # noqa: E731
    sd_config = json.loads((release / "stable-diffusion-v1-5" / "unet" / "config.json").read_text())
    unet_kwargs, _ = _official_unet_kwargs(args.champ_code)
    unet = goldens._unet3d(UNet3DConditionModel, sd_config, unet_kwargs).eval()
    goldens._load_exact(unet, {**load(ckpt / "denoising_unet.pth"), **load(ckpt / "motion_module.pth")}, "unet")
    reference_unet = UNet2DConditionModel.from_config(sd_config).eval()
    goldens._load_exact(reference_unet, load(ckpt / "reference_unet.pth"), "reference UNet")
    modules = {"vae": AutoencoderKL.from_pretrained(str(release / "sd-vae-ft-mse")).eval(),
               "image_encoder": CLIPVisionModelWithProjection.from_pretrained(str(release / "image_encoder")).eval(),
               "reference_unet": reference_unet, "denoising_unet": unet}
    for g in GUIDANCE_TYPES:
        sd = load(ckpt / f"guidance_encoder_{g}.pth")
        widths = [sd["conv_in.weight"].shape[0]] + [sd[f"blocks.{2 * i + 1}.weight"].shape[0] for i in range(3)]
        encoder = GuidanceEncoder(guidance_embedding_channels=sd_config["block_out_channels"][0],
                                  guidance_input_channels=3, block_out_channels=widths).eval()
        goldens._load_exact(encoder, sd, f"guidance encoder {g}")
        modules[f"guidance_encoder_{g}"] = encoder
    modules = {k: m.to(device) for k, m in modules.items()}
    return _run_official_pipe(args, modules, *load_inputs(args.inputs), device)


def _run_official_pipe(args, modules, reference, maps, device):
    pipe = _official_pipe(args.champ_code, modules)
    size = maps["depth"].shape[1]
    keep = {}
    _official_call(pipe, reference, {g: m[:2] for g, m in maps.items()}, size, 1, args.cfg, args.seed, device,
                   keep)()
    _, figures = measure(_official_call(pipe, reference, maps, size, args.steps, args.cfg, args.seed, device, keep),
                         device)
    if args.latents_out:
        np.save(args.latents_out, keep["latents"].float().cpu().numpy())
    return figures


def run_official_full(args) -> dict:
    import torch

    goldens = _official_imports(args.champ_code)
    from diffusers import AutoencoderKL
    from models.guidance_encoder import GuidanceEncoder
    from models.unet_2d_condition import UNet2DConditionModel
    from models.unet_3d import UNet3DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.set_grad_enabled(False)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet_kwargs, guidance_kwargs = _official_unet_kwargs(args.champ_code)
    with torch.device(device):
        modules = {"denoising_unet": goldens._unet3d(UNet3DConditionModel, SD15_UNET, unet_kwargs),
                   "reference_unet": UNet2DConditionModel.from_config(SD15_UNET), "vae": AutoencoderKL(**SD_VAE),
                   "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VIT_L14)),
                   **{f"guidance_encoder_{g}": GuidanceEncoder(**guidance_kwargs) for g in GUIDANCE_TYPES}}
    modules = {k: m.to(device, dtype).eval().requires_grad_(False) for k, m in modules.items()}
    args.latents_out = None
    return _run_official_pipe(args, modules, *random_inputs(args.frames, args.size), device)


# ------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=("ours", "official", "ours-full", "official-full"))
    parser.add_argument("--release", help="the tiny fixture release folder (…/champ)")
    parser.add_argument("--inputs", help="the .npz of inputs bench/sampler.py wrote")
    parser.add_argument("--champ-code", default=os.environ.get("CHAMP_OFFICIAL_CODE", ""),
                        help="the official code (official side; default: $CHAMP_OFFICIAL_CODE)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--frames", type=int, default=24, help="full-size runs only")
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="full-size runs only")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is there")
    parser.add_argument("--latents-out", help="save the final latents here (.npy) to compare the sides")
    parser.add_argument("--decode-chunk", type=int, help="ours: frames per VAE decode call (default: animate's)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    run = {"ours": run_ours, "official": run_official, "ours-full": run_ours_full,
           "official-full": run_official_full}[args.side]
    figures = run(args)
    figures.update(side=args.side, threads=torch.get_num_threads(), torch=torch.__version__, pid=os.getpid())
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
