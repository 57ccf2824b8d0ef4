"""Golden outputs of the **official** Champ code on the tiny fixture release, for parity tests.

This script imports nothing from Marionette. It runs the official modules and pipeline of
fudan-generative-vision/champ (commit 02e5533) in a separate virtualenv with the versions that
code was written for, on the tiny release folder that tests/fixtures/make_models.py writes:

    # 1. the fixture release, with the project's environment (its values are seeded)
    .venv/bin/python tests/fixtures/make_models.py $TMP/champ_fx --only champ
    # 2. a virtualenv for the official code; torch, numpy, PIL, safetensors ... are borrowed
    #    read-only from the project's venv through a .pth file (no CUDA torch download)
    python3.11 -m venv $TMP/champ_golden_venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > $TMP/champ_golden_venv/lib/python3.11/site-packages/zz_project.pth
    $TMP/champ_golden_venv/bin/pip install --no-deps diffusers==0.24.0 transformers==4.30.2 \
        huggingface_hub==0.20.3 tokenizers==0.13.3 einops==0.8.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
    # 3. the official code (git archive of the fetched repo) and this script
    git -C <champ git dir> archive 02e5533 models pipelines configs | tar -x -C $TMP/champ_official
    HF_HOME=$TMP/champ_golden_hf $TMP/champ_golden_venv/bin/python tests/golden/make_champ_goldens.py \
        --champ-code $TMP/champ_official --release $TMP/champ_fx/champ --out tests/golden

Writes, under ``--out``:

* ``champ_official_keys.json.gz``: key → shape of the official modules at full size (SD1.5's
  UNet config from the official inference settings; built on ``meta``): the denoising UNet with
  motion modules, the reference UNet, a guidance encoder, and, separately, which keys belong to
  ``motion_module.pth``.
* ``champ_tiny_goldens.npz`` (+ ``champ_tiny_goldens.json``, the settings and versions):
  - ``fixture_digest_*``: a digest of every fixture weight file's tensors, so a test can tell
    when the fixture changed and these goldens must be rebuilt;
  - ``guidance_in_<type>`` [1,3,F,16,16] in [0,1]: the encoders' inputs before a nearest ×8
    upsampling (``upsample8``) to [1,3,F,128,128] (stored small); ``guidance_out_depth``
    [1,32,F,16,16] and ``guidance_sum`` (the four outputs summed, as the pipeline does);
  - one denoising-UNet call on a CFG batch: ``unet_latents`` [2,4,F,16,16], ``unet_timestep``,
    ``unet_context`` [2,1,32] (zeros, then a CLIP token), guidance features ``guidance_sum``
    doubled, ``unet_out_plain`` (no reference attention) and, after the reference UNet wrote
    ``ref_latents`` [2,4,16,16] at t=0 with the same context, ``unet_out_reference``;
  - the aggregation pipeline (``MultiGuidance2LongVideoPipeline``) on a 30-frame guidance video
    of 128x128 images, 3 DDIM steps, CFG 3.5, seed 42, 24-frame windows with overlap 4 (windows
    [0..23] and [20..29, 0..13], the second wrapping around): ``pipe_ref_image`` (uint8
    [20,16,3] before ``upsample8``: a 160x128 picture), ``pipe_guidance_<type>`` (uint8
    [N,16,16,3] before ``upsample8``), ``pipe_windows``, ``pipe_timesteps``,
    ``pipe_latents_init``, ``pipe_latents_step<i>`` after each step, ``pipe_clip_embeds``,
    ``pipe_ref_latents``, ``pipe_video`` (the decoded frames 0 and 29, [2,3,128,128] in [0,1],
    float16).
  - a single-window case (``single_*``, same layout as ``pipe_*``): 6 frames (one window, no
    aggregation), 2 steps, CFG 2.5, seed 7, a 128x96 reference; ``single_steps``,
    ``single_cfg``, ``single_seed`` hold the settings.

Everything runs in fp32 on the CPU; the official code rounds the reference bank to fp16.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")
FRAMES_UNET = 4
SIZE = 128  # image side; latent 16 (the tiny UNet's bottom level is then 2x2)
PIPE_FRAMES, PIPE_STEPS, PIPE_CFG, PIPE_SEED = 30, 3, 3.5, 42
SINGLE_FRAMES, SINGLE_STEPS, SINGLE_CFG, SINGLE_SEED = 6, 2, 2.5, 7
SD15_UNET_CONFIG = {  # stable-diffusion-v1-5/unet/config.json (the values Champ reads)
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}


def upsample8(a: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """Nearest-neighbour ×8 along ``axes`` (inputs are stored at 1/8 size)."""
    for axis in axes:
        a = np.repeat(a, 8, axis=axis)
    return a


def _keep(store: dict, key: str, tensor):
    store[key] = tensor.numpy().copy()
    return tensor


def fixture_digest(path: Path) -> str:
    """sha256 over the sorted keys, shapes, dtypes and bytes of a weight file's tensors."""
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _unet3d(UNet3DConditionModel, sd_config: dict, unet_kwargs: dict):
    config = dict(sd_config, _class_name="UNet3DConditionModel", mid_block_type="UNetMidBlock3DCrossAttn",
                  down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                  up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3)
    return UNet3DConditionModel.from_config(config, **unet_kwargs)  # as from_pretrained_2d builds it


def _load_exact(module, state_dict: dict, what: str) -> None:
    """The official code loads with strict=False; here nothing may be left out."""
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{what}: missing {missing[:5]} unexpected {unexpected[:5]}")


def official_keys(code, out: Path) -> None:
    import torch
    from models.guidance_encoder import GuidanceEncoder
    from models.unet_2d_condition import UNet2DConditionModel
    from models.unet_3d import UNet3DConditionModel

    shapes = lambda m: {k: list(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    with torch.device("meta"):
        unet = _unet3d(UNet3DConditionModel, SD15_UNET_CONFIG, code["unet_kwargs"])
        ref = UNet2DConditionModel.from_config(SD15_UNET_CONFIG)
        enc = GuidanceEncoder(**code["guidance_kwargs"])
    unet_shapes = shapes(unet)
    data = {"denoising_unet_with_motion_modules": unet_shapes,
            "motion_module_keys": sorted(k for k in unet_shapes if "motion_module" in k),
            "reference_unet": shapes(ref), "guidance_encoder": shapes(enc)}
    with gzip.open(out / "champ_official_keys.json.gz", "wt") as f:
        json.dump(data, f, sort_keys=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--champ-code", required=True, help="folder with the official models/ pipelines/ configs/")
    parser.add_argument("--release", required=True, help="the tiny fixture release folder (…/champ)")
    parser.add_argument("--out", required=True, help="folder for the golden files")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.champ_code).resolve()))
    release, out = Path(args.release), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import diffusers
    import torch
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection

    from models.guidance_encoder import GuidanceEncoder
    from models.mutual_self_attention import ReferenceAttentionControl
    from models.unet_2d_condition import UNet2DConditionModel
    from models.unet_3d import UNet3DConditionModel
    from pipelines.context import get_context_scheduler
    from pipelines.pipeline_aggregation import MultiGuidance2LongVideoPipeline

    torch.set_grad_enabled(False)
    cfg = OmegaConf.load(Path(args.champ_code) / "configs" / "inference" / "inference.yaml")
    unet_kwargs = OmegaConf.to_container(cfg.unet_additional_kwargs)
    official_keys({"unet_kwargs": unet_kwargs,
                   "guidance_kwargs": OmegaConf.to_container(cfg.guidance_encoder_kwargs)}, out)

    # ---- the official models, filled from the fixture release (fp32, CPU)
    ckpt = release / "champ"
    load = lambda p: torch.load(str(p), map_location="cpu", weights_only=True)  # noqa: E731
    sd_config = json.loads((release / "stable-diffusion-v1-5" / "unet" / "config.json").read_text())
    unet = _unet3d(UNet3DConditionModel, sd_config, unet_kwargs).eval()
    _load_exact(unet, {**load(ckpt / "denoising_unet.pth"), **load(ckpt / "motion_module.pth")}, "denoising UNet")
    reference_unet = UNet2DConditionModel.from_config(sd_config).eval()
    _load_exact(reference_unet, load(ckpt / "reference_unet.pth"), "reference UNet")
    width = sd_config["block_out_channels"][0]
    encoders = {}
    for g in GUIDANCE_TYPES:
        sd = load(ckpt / f"guidance_encoder_{g}.pth")
        widths = [sd["conv_in.weight"].shape[0]] + [sd[f"blocks.{2 * i + 1}.weight"].shape[0] for i in range(3)]
        encoders[g] = GuidanceEncoder(guidance_embedding_channels=width, guidance_input_channels=3,
                                      block_out_channels=widths).eval()
        _load_exact(encoders[g], sd, f"guidance encoder {g}")
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(release / "image_encoder")).eval()
    vae = AutoencoderKL.from_pretrained(str(release / "sd-vae-ft-mse")).eval()

    g = {}
    rng = np.random.default_rng(2024)
    weights = ("denoising_unet", "reference_unet", "motion_module", *(f"guidance_encoder_{t}" for t in GUIDANCE_TYPES))
    for name in weights:
        g[f"fixture_digest_{name}"] = np.array(fixture_digest(ckpt / f"{name}.pth"))

    # ---- guidance encoders
    feats = []
    for t in GUIDANCE_TYPES:
        x = rng.uniform(0, 1, (1, 3, FRAMES_UNET, SIZE // 8, SIZE // 8)).astype(np.float32)
        y = encoders[t](torch.from_numpy(upsample8(x)))
        g[f"guidance_in_{t}"] = x
        feats.append(y)
    g["guidance_out_depth"] = feats[0].numpy()
    guidance = torch.stack(feats).sum(0)
    g["guidance_sum"] = guidance.numpy()

    # ---- one denoising-UNet call, without and with reference attention (CFG batch)
    lat = SIZE // 8
    latents = torch.from_numpy(rng.standard_normal((2, 4, FRAMES_UNET, lat, lat)).astype(np.float32))
    clip = torch.from_numpy(rng.standard_normal((1, 1, width)).astype(np.float32))
    context = torch.cat([torch.zeros_like(clip), clip])
    t = torch.tensor(799)
    unet_guidance = guidance.repeat(2, 1, 1, 1, 1)
    g.update(unet_latents=latents.numpy(), unet_timestep=np.array(799), unet_context=context.numpy())
    g["unet_out_plain"] = unet(latents, t, encoder_hidden_states=context, guidance_fea=unet_guidance).sample.numpy()
    ref_latents = torch.from_numpy(rng.standard_normal((1, 4, lat, lat)).astype(np.float32)).repeat(2, 1, 1, 1)
    g["ref_latents"] = ref_latents.numpy()
    writer = ReferenceAttentionControl(reference_unet, do_classifier_free_guidance=True, mode="write",
                                       fusion_blocks="full")
    reader = ReferenceAttentionControl(unet, do_classifier_free_guidance=True, mode="read", fusion_blocks="full")
    reference_unet(ref_latents, torch.zeros_like(t), encoder_hidden_states=context, return_dict=False)
    reader.update(writer)
    g["unet_out_reference"] = unet(latents, t, encoder_hidden_states=context, guidance_fea=unet_guidance).sample.numpy()
    reader.clear()
    writer.clear()
    # the hooks stay on these module instances: rebuild both UNets for the pipeline
    unet2 = _unet3d(UNet3DConditionModel, sd_config, unet_kwargs).eval()
    unet2.load_state_dict(unet.state_dict())
    reference_unet2 = UNet2DConditionModel.from_config(sd_config).eval()
    reference_unet2.load_state_dict(reference_unet.state_dict())

    # ---- the aggregation pipeline, as inference.py sets it up
    sched_kwargs = OmegaConf.to_container(cfg.noise_scheduler_kwargs)
    if cfg.enable_zero_snr:
        sched_kwargs.update(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    scheduler = DDIMScheduler(**sched_kwargs)  # linear betas: the official quirk
    small = rng.integers(0, 256, ((SIZE + 32) // 8, SIZE // 8, 3), dtype=np.uint8)  # not square: gets resized
    g["pipe_ref_image"] = small
    ref_image = upsample8(small, axes=(0, 1))
    group = {}
    for name in GUIDANCE_TYPES:
        frames = rng.integers(0, 256, (PIPE_FRAMES, SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
        g[f"pipe_guidance_{name}"] = frames
        group[name] = [Image.fromarray(f) for f in upsample8(frames, axes=(1, 2))]
    pipe = MultiGuidance2LongVideoPipeline(
        vae=vae, image_encoder=image_encoder, reference_unet=reference_unet2, denoising_unet=unet2,
        **{f"guidance_encoder_{k}": v for k, v in encoders.items()}, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    steps = []

    def record(step, timestep, latents):
        # the official loop reuses `i` for its window loop, so `step` is wrong: count calls instead
        steps.append(latents.clone())

    original_prepare = pipe.prepare_latents

    def prepare(*a, **k):
        lat0 = original_prepare(*a, **k)
        g["pipe_latents_init"] = lat0.numpy().copy()
        return lat0

    pipe.prepare_latents = prepare
    original_clip = image_encoder.forward

    def clip_forward(*a, **k):
        result = original_clip(*a, **k)
        g["pipe_clip_embeds"] = result.image_embeds.numpy().copy()
        return result

    image_encoder.forward = clip_forward
    generator = torch.Generator(device="cpu").manual_seed(PIPE_SEED)
    video = pipe(Image.fromarray(ref_image), group, SIZE, SIZE, PIPE_FRAMES, num_inference_steps=PIPE_STEPS,
                 guidance_scale=PIPE_CFG, generator=generator, callback=record, callback_steps=1).videos
    g["pipe_timesteps"] = scheduler.timesteps.numpy()
    for i, latents_i in enumerate(steps):
        g[f"pipe_latents_step{i}"] = latents_i.numpy()
    g["pipe_video"] = video[0][:, [0, PIPE_FRAMES - 1]].permute(1, 0, 2, 3).numpy().astype(np.float16)
    ref_tensor = pipe.ref_image_processor.preprocess(Image.fromarray(ref_image), height=SIZE, width=SIZE)
    g["pipe_ref_latents"] = (vae.encode(ref_tensor).latent_dist.mean * 0.18215).numpy()
    windows = list(get_context_scheduler("uniform")(0, PIPE_STEPS, PIPE_FRAMES, 24, 1, 4))
    g["pipe_windows"] = np.array(windows, dtype=np.int64)

    # ---- a single-window case (the video fits one window: no aggregation), another seed and scale
    image_encoder.forward = original_clip  # keep pipe_clip_embeds from the run above
    unet3 = _unet3d(UNet3DConditionModel, sd_config, unet_kwargs).eval()
    unet3.load_state_dict(unet.state_dict())
    reference_unet3 = UNet2DConditionModel.from_config(sd_config).eval()
    reference_unet3.load_state_dict(reference_unet.state_dict())
    small = rng.integers(0, 256, (SIZE // 8, (SIZE - 32) // 8, 3), dtype=np.uint8)
    g["single_ref_image"] = small
    group = {}
    for name in GUIDANCE_TYPES:
        frames = rng.integers(0, 256, (SINGLE_FRAMES, SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
        g[f"single_guidance_{name}"] = frames
        group[name] = [Image.fromarray(f) for f in upsample8(frames, axes=(1, 2))]
    scheduler3 = DDIMScheduler(**sched_kwargs)
    pipe3 = MultiGuidance2LongVideoPipeline(
        vae=vae, image_encoder=image_encoder, reference_unet=reference_unet3, denoising_unet=unet3,
        **{f"guidance_encoder_{k}": v for k, v in encoders.items()}, scheduler=scheduler3)
    pipe3.set_progress_bar_config(disable=True)
    steps.clear()
    pipe3.prepare_latents = lambda *a, **k: _keep(g, "single_latents_init", original_prepare3(*a, **k))
    original_prepare3 = MultiGuidance2LongVideoPipeline.prepare_latents.__get__(pipe3)
    video = pipe3(Image.fromarray(upsample8(small, axes=(0, 1))), group, SIZE, SIZE, SINGLE_FRAMES,
                  num_inference_steps=SINGLE_STEPS, guidance_scale=SINGLE_CFG,
                  generator=torch.Generator(device="cpu").manual_seed(SINGLE_SEED), callback=record,
                  callback_steps=1).videos
    for i, latents_i in enumerate(steps):
        g[f"single_latents_step{i}"] = latents_i.numpy()
    g["single_video"] = video[0][:, [0, SINGLE_FRAMES - 1]].permute(1, 0, 2, 3).numpy().astype(np.float16)
    g["single_windows"] = np.array(list(get_context_scheduler("uniform")(0, SINGLE_STEPS, SINGLE_FRAMES, 24, 1, 4)),
                                   dtype=np.int64)
    g.update(single_steps=np.array(SINGLE_STEPS), single_cfg=np.array(SINGLE_CFG), single_seed=np.array(SINGLE_SEED))

    np.savez_compressed(out / "champ_tiny_goldens.npz", **g)
    meta = {"champ_commit": "02e5533", "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "dtype": "float32", "device": "cpu",
            "guidance_types": list(GUIDANCE_TYPES), "unet_frames": FRAMES_UNET, "image_size": SIZE,
            "pipeline": {"frames": PIPE_FRAMES, "steps": PIPE_STEPS, "guidance_scale": PIPE_CFG, "seed": PIPE_SEED,
                         "context_frames": 24, "context_overlap": 4, "context_stride": 1,
                         "scheduler": {k: v for k, v in scheduler.config.items() if not k.startswith("_")},
                         "video_frames_kept": [0, PIPE_FRAMES - 1]},
            "arrays": {k: list(np.shape(v)) for k, v in g.items()}}
    (out / "champ_tiny_goldens.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    print(f"wrote {out / 'champ_tiny_goldens.npz'} ({(out / 'champ_tiny_goldens.npz').stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
