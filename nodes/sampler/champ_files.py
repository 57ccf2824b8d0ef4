"""The official Champ release folder, loaded key for key.

Users drop the Hugging Face repo ``fudan-generative-ai/champ`` into ``models/champ/`` as
downloaded (or point ``extra_model_paths.yaml`` at it)::

    champ/denoising_unet.pth  reference_unet.pth  motion_module.pth
    champ/guidance_encoder_{depth,normal,semantic_map,dwpose}.pth
    stable-diffusion-v1-5/unet/config.json        (only the config is used)
    image_encoder/config.json + pytorch_model.bin (or model.safetensors)
    sd-vae-ft-mse/config.json + diffusion_pytorch_model.safetensors (or .bin)

Each ``.pth`` may be replaced by a ``.safetensors`` conversion with the same stem, in fp32, fp16
or bf16. Every weight file is read with ``models_loader.files.load_state_dict`` (never running
pickled code) and compared with the module it fills — every key present, none left over, every
shape right — before it is loaded with ``strict=True``; the only tolerated differences are the
ones the official release has by design (the reference UNet has no output layers; the UNet's
weights are split between ``denoising_unet.pth`` and ``motion_module.pth``; old CLIP files carry
a ``position_ids`` buffer; the VAE may use diffusers' pre-0.14 attention key names). Anything else
raises ``ModelFileMissing`` / ``ModelFileInvalid`` naming the file and what is wrong.

The UNets, guidance encoders and VAE are built on the ``meta`` device and filled with
``assign=True``, so a multi-GB UNet is never held twice; the CLIP tower is built on the CPU and
copied into.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ...models_loader import catalog, files
from ...models_loader.cache import CACHE, LoadedModel
from .guidance_encoder import GuidanceEncoder, GuidanceEncoderConfig
from .reference_attention import build_reference_unet
from .unet3d import UNet3DConditionModel, UNet3DConfig

GUIDANCE_TYPES = catalog.CHAMP_GUIDANCE_TYPES
LATENT_SCALE = 0.18215  # SD1.5 VAE latent scale used by Champ
MOTION_KEY = "motion_modules."
# The reference UNet's output layers, absent from reference_unet.pth (the official class drops them).
REFERENCE_UNET_DROPPED = ("conv_norm_out.", "conv_out.")
# Saved by transformers < 4.31 as a persistent buffer; a constant (arange) that current versions rebuild.
CLIP_POSITION_IDS = "vision_model.embeddings.position_ids"
# diffusers < 0.14 attention names inside the VAE's mid blocks → current ones.
_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

COMPONENTS = ("denoising_unet", "reference_unet", *(f"guidance_encoder_{g}" for g in GUIDANCE_TYPES),
              "image_encoder", "vae")


def _entry(component: str) -> catalog.ModelFile:
    return catalog.model(f"champ_{component}")


@dataclass(frozen=True)
class ChampRelease:
    """The files of one Champ release folder.

    Attributes:
        root: the folder (the Hugging Face repo's root).
        paths: catalog id → the file found for it (``.pth`` or ``.safetensors`` ...).
    """

    root: Path
    paths: dict = field(compare=False)

    @classmethod
    def find(cls, name: str | None = None) -> "ChampRelease":
        """The release in ComfyUI's ``models/champ`` folder(s) (or the one named ``name``: a
        sub-folder of them, or an absolute path)."""
        return cls.from_folder(files.find_dir(_entry("denoising_unet"), name))

    @classmethod
    def from_folder(cls, root) -> "ChampRelease":
        """Resolve every file of the release under ``root``; ``ModelFileMissing`` lists every
        missing one at once."""
        root = Path(root)
        paths, missing = {}, []
        for entry in catalog.MODELS.values():
            if entry.folder != "champ":
                continue
            found = next((root / n for n in entry.names if (root / n).is_file()), None)
            if found is None:
                missing.append(" or ".join(entry.names))
            else:
                paths[entry.id] = found
        for config in ("image_encoder/config.json", "sd-vae-ft-mse/config.json"):
            if (root / config).is_file():
                paths[config] = root / config
            else:
                missing.append(config)
        if missing:
            entry = _entry("denoising_unet")
            raise files.ModelFileMissing(
                f"The Champ release folder {root} is incomplete: missing " + ", ".join(missing) + ".\n"
                f"Fix: download the whole repository {entry.url} ({entry.licence}) and put it, as downloaded, in "
                f"{files.folder_dirs('champ')[0]}{os.sep} (or any folder listed for 'champ' in "
                f"extra_model_paths.yaml).")
        return cls(root=root, paths=paths)

    def path(self, component: str) -> Path:
        """The file of ``component`` (``"denoising_unet"``, ``"vae"`` ...)."""
        return self.paths[f"champ_{component}"]

    def sd_unet_config(self) -> dict:
        """SD1.5's ``unet/config.json`` as a dict (``ModelFileInvalid`` when unreadable)."""
        path = self.paths["champ_sd15_unet_config"]
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise files.invalid_error(path, _entry("sd15_unet_config"), f"it is not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise files.invalid_error(path, _entry("sd15_unet_config"), "it holds no JSON object")
        return data

    def unet_config(self, **champ_kwargs) -> UNet3DConfig:
        """Champ's UNet config: the release's SD1.5 UNet config plus the official inference
        settings (override them with ``champ_kwargs``)."""
        path = self.paths["champ_sd15_unet_config"]
        try:
            return UNet3DConfig.from_sd_unet_config(self.sd_unet_config(), **champ_kwargs)
        except (ValueError, TypeError) as exc:
            raise files.invalid_error(path, _entry("sd15_unet_config"), str(exc)) from exc


# ----------------------------------------------------------------------------- loading

def _expected(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _cast(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def _fill(module: nn.Module, state_dict: dict, dtype: torch.dtype, device) -> nn.Module:
    """Load a checked state dict into a module built on ``meta`` (``strict=True``, tensors
    adopted, not copied), then move it to ``device``."""
    module.load_state_dict(_cast(state_dict, dtype), strict=True, assign=True)
    empty = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if empty:  # a buffer the files do not hold: a bug here, not a user error
        raise RuntimeError(f"{type(module).__name__} has tensors no file filled: {empty[:5]}")
    return module.to(device).eval().requires_grad_(False)


def _read(release: ChampRelease, component: str) -> tuple[dict, Path, catalog.ModelFile]:
    entry = _entry(component)
    path = release.path(component)
    return files.load_state_dict(path, entry), path, entry


def load_denoising_unet(release: ChampRelease, dtype: torch.dtype = torch.float32, device="cpu",
                        config: UNet3DConfig | None = None) -> UNet3DConditionModel:
    """The 3D denoising UNet: ``denoising_unet.pth`` (every key but the motion modules) plus
    ``motion_module.pth`` (exactly the motion-module keys). Motion-module keys found in
    ``denoising_unet.pth`` (re-saved full checkpoints) are overridden by ``motion_module.pth``,
    as the official loader does."""
    config = config or release.unet_config()
    unet = UNet3DConditionModel(config, device="meta")
    expected = _expected(unet)
    main_sd, main_path, main_entry = _read(release, "denoising_unet")
    motion_sd, motion_path, motion_entry = _read(release, "motion_module")
    expected_motion = {k: s for k, s in expected.items() if MOTION_KEY in k}
    expected_main = {k: s for k, s in expected.items() if MOTION_KEY not in k}
    files.check_state_dict(motion_sd, expected_motion, motion_path, motion_entry)
    main_only = {k: v for k, v in main_sd.items() if MOTION_KEY not in k}
    files.check_state_dict(main_only, expected_main, main_path, main_entry)
    return _fill(unet, {**main_only, **motion_sd}, dtype, device)


def load_reference_unet(release: ChampRelease, dtype: torch.dtype = torch.float32, device="cpu",
                        config: UNet3DConfig | None = None):
    """The 2D reference UNet (diffusers ``UNet2DConditionModel`` without output layers)."""
    config = config or release.unet_config()
    unet = build_reference_unet(config, device="meta")
    sd, path, entry = _read(release, "reference_unet")
    files.check_state_dict(sd, _expected(unet), path, entry, allow_unexpected=REFERENCE_UNET_DROPPED)
    sd = {k: v for k, v in sd.items() if not k.startswith(REFERENCE_UNET_DROPPED)}
    return _fill(unet, sd, dtype, device)


def load_guidance_encoder(release: ChampRelease, guidance_type: str, dtype: torch.dtype = torch.float32, device="cpu",
                          unet_config: UNet3DConfig | None = None) -> GuidanceEncoder:
    """The guidance encoder of ``guidance_type`` (depth, normal, semantic_map, dwpose)."""
    if guidance_type not in GUIDANCE_TYPES:
        raise ValueError(f"unknown guidance type '{guidance_type}'; Champ has {list(GUIDANCE_TYPES)}")
    unet_config = unet_config or release.unet_config()
    sd, path, entry = _read(release, f"guidance_encoder_{guidance_type}")
    try:
        config = GuidanceEncoderConfig.from_state_dict(sd)
    except KeyError as exc:
        raise files.invalid_error(path, entry, f"its weights do not match the expected layout — missing key {exc}") \
            from exc
    except ValueError as exc:
        raise files.invalid_error(path, entry, str(exc)) from exc
    width = unet_config.block_out_channels[0]
    if config.guidance_input_channels != 3 or config.guidance_embedding_channels != width:
        raise files.invalid_error(
            path, entry, f"it maps {config.guidance_input_channels} channels to {config.guidance_embedding_channels}, "
            f"but Champ's guidance images have 3 channels and the denoising UNet's first level has {width}")
    encoder = GuidanceEncoder(config, device="meta")
    files.check_state_dict(sd, _expected(encoder), path, entry)
    return _fill(encoder, sd, dtype, device)


def load_image_encoder(release: ChampRelease, dtype: torch.dtype = torch.float32, device="cpu"):
    """transformers' ``CLIPVisionModelWithProjection`` from ``image_encoder/`` (config read with
    ``local_files_only=True``; weights read and checked here)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = release.root / "image_encoder"
    entry = _entry("image_encoder")
    try:
        config = CLIPVisionConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise files.invalid_error(folder / "config.json", entry, f"transformers cannot read it ({exc})") from exc
    with torch.device("cpu"):
        model = CLIPVisionModelWithProjection(config)
    sd, path, _ = _read(release, "image_encoder")
    expected = {k: s for k, s in _expected(model).items() if k != CLIP_POSITION_IDS}
    files.check_state_dict(sd, expected, path, entry, allow_unexpected=(CLIP_POSITION_IDS,))
    sd.pop(CLIP_POSITION_IDS, None)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - {CLIP_POSITION_IDS}:  # cannot happen after the check; never ignore silently
        raise files.invalid_error(path, entry, f"loading left keys missing {missing} / unexpected {unexpected}")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _current_vae_keys(sd: dict) -> dict:
    """Rename diffusers < 0.14 attention keys (``...attentions.0.query.weight``) to current ones."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_VAE_ATTENTION:
            key = ".".join(parts[:-2] + [_OLD_VAE_ATTENTION[parts[-2]], parts[-1]])
        out[key] = value
    return out


def load_vae(release: ChampRelease, dtype: torch.dtype = torch.float32, device="cpu"):
    """diffusers' ``AutoencoderKL`` from ``sd-vae-ft-mse/`` (latents are scaled by
    ``LATENT_SCALE``)."""
    from diffusers import AutoencoderKL

    folder = release.root / "sd-vae-ft-mse"
    entry = _entry("vae")
    try:
        config = AutoencoderKL.load_config(str(folder), local_files_only=True)
        with torch.device("meta"):
            vae = AutoencoderKL.from_config(config)
    except (OSError, ValueError, TypeError) as exc:
        raise files.invalid_error(folder / "config.json", entry, f"diffusers cannot read it ({exc})") from exc
    sd, path, _ = _read(release, "vae")
    sd = _current_vae_keys(sd)
    files.check_state_dict(sd, _expected(vae), path, entry)
    return _fill(vae, sd, dtype, device)


def load(release: ChampRelease, component: str, dtype: torch.dtype = torch.float32, device="cpu"):
    """Any component by name (see ``COMPONENTS``), uncached."""
    if component == "denoising_unet":
        return load_denoising_unet(release, dtype, device)
    if component == "reference_unet":
        return load_reference_unet(release, dtype, device)
    if component.startswith("guidance_encoder_"):
        return load_guidance_encoder(release, component[len("guidance_encoder_"):], dtype, device)
    if component == "image_encoder":
        return load_image_encoder(release, dtype, device)
    if component == "vae":
        return load_vae(release, dtype, device)
    raise ValueError(f"unknown Champ component '{component}'; known: {list(COMPONENTS)}")


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def load_component(release: ChampRelease, component: str, dtype: torch.dtype | None = None,
                   device=None) -> LoadedModel:
    """A component through the shared cache (``models_loader.cache.CACHE``): loaded once per
    file, dtype and device, kept on the CPU and, under ComfyUI, moved by its memory manager.
    Call ``.on_device()`` on the result right before each use."""
    main = release.path(component)
    extra = [_stamp(release.paths["champ_sd15_unet_config"])]
    if component == "denoising_unet":
        extra.append(_stamp(release.path("motion_module")))
    if component == "image_encoder":
        extra.append(_stamp(release.paths["image_encoder/config.json"]))
    if component == "vae":
        extra.append(_stamp(release.paths["sd-vae-ft-mse/config.json"]))
    dtype = dtype or torch.float32
    return CACHE.torch_module(_entry(component), main, lambda: load(release, component, dtype, "cpu"), dtype=dtype,
                              device=device, extra_key=tuple(extra))
