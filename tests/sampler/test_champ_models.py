"""Champ's models: the official release folder loads key for key (the tiny fixture release, and
the full-size key lists of the official code), damaged files fail with messages naming them,
and the guidance encoder, motion modules and reference attention behave as the spec says.
Parity with the official code: tests/golden/make_champ_goldens.py ran it on the same fixture."""
import gzip
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.models_loader import catalog, files
from marionette.models_loader.cache import CACHE
from marionette.nodes.sampler import champ_files
from marionette.nodes.sampler.champ_files import ChampRelease
from marionette.nodes.sampler.guidance_encoder import GuidanceEncoder, GuidanceEncoderConfig
from marionette.nodes.sampler.motion_module import MotionModule
from marionette.nodes.sampler.reference_attention import (ReferenceAttention, build_reference_unet,
                                                          transformer_blocks)
from marionette.nodes.sampler.unet3d import UNet3DConditionModel, UNet3DConfig

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TINY = dict(block_out_channels=(32, 32, 32, 32), cross_attention_dim=32)


def _golden_script():
    spec = importlib.util.spec_from_file_location("make_champ_goldens", GOLDEN / "make_champ_goldens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is many times faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def release(fixture_models):
    return ChampRelease.from_folder(fixture_models / "champ")


@pytest.fixture(scope="module")
def models(release):
    """Every component, loaded once (frozen: no autograd graph is built in these tests)."""
    return {c: champ_files.load(release, c) for c in champ_files.COMPONENTS}


def _shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------ loading

def test_release_is_found_in_the_champ_models_folder(models_dir):
    found = ChampRelease.find()
    assert found.root == models_dir / "champ"
    assert found.path("denoising_unet").name == "denoising_unet.pth"
    assert ChampRelease.find(str(models_dir / "champ")).root == found.root  # an absolute folder


def test_release_nested_in_a_subfolder_is_found(tmp_path, release):
    nested = tmp_path / "models" / "champ" / "pretrained_models"
    shutil.copytree(release.root, nested)
    files.set_models_dir(tmp_path / "models")
    try:
        assert ChampRelease.find().root == nested
        assert ChampRelease.find("pretrained_models").root == nested
    finally:
        files.set_models_dir(None)


def test_every_component_loads_with_every_key_checked(models):
    assert type(models["denoising_unet"]).__name__ == "UNet3DConditionModel"
    assert type(models["reference_unet"]).__name__ == "UNet2DConditionModel"
    assert type(models["image_encoder"]).__name__ == "CLIPVisionModelWithProjection"
    assert type(models["vae"]).__name__ == "AutoencoderKL"
    for name, model in models.items():
        assert not any(p.is_meta or p.requires_grad for p in model.parameters()), name


def test_every_official_key_maps_to_a_parameter(release, models):
    """Each file's keys are exactly the module's (no key unused, none missing) and every tensor
    arrives unchanged."""
    load = lambda c: torch.load(release.path(c), weights_only=True)  # noqa: E731
    unet = models["denoising_unet"].state_dict()
    main, motion = load("denoising_unet"), load("motion_module")
    assert set(main) | set(motion) == set(unet) and not set(main) & set(motion)
    assert set(motion) == {k for k in unet if "motion_modules." in k}
    assert len({k.split(".temporal_transformer")[0] for k in motion}) == 21
    ref = load("reference_unet")
    assert set(ref) == set(models["reference_unet"].state_dict())
    for component, module in (("denoising_unet", unet), ("motion_module", unet),
                              ("reference_unet", models["reference_unet"].state_dict()),
                              *((f"guidance_encoder_{g}", models[f"guidance_encoder_{g}"].state_dict())
                                for g in champ_files.GUIDANCE_TYPES)):
        sd = load(component)
        if component.startswith("guidance"):
            assert set(sd) == set(module)
        for key, value in sd.items():
            assert torch.equal(module[key], value), (component, key)
    clip = torch.load(release.path("image_encoder"), weights_only=True)
    assert set(clip) - {champ_files.CLIP_POSITION_IDS} == set(models["image_encoder"].state_dict())


def test_full_size_modules_have_the_official_keys_and_shapes():
    """Key → shape lists of the official modules at full size (written by the golden script
    from the official code) equal ours, built on ``meta``."""
    with gzip.open(GOLDEN / "champ_official_keys.json.gz", "rt") as f:
        official = {k: ({n: tuple(s) for n, s in v.items()} if isinstance(v, dict) else v)
                    for k, v in json.load(f).items()}
    config = UNet3DConfig.from_sd_unet_config(_golden_script().SD15_UNET_CONFIG)
    unet = UNet3DConditionModel(config, device="meta")
    assert _shapes(unet) == official["denoising_unet_with_motion_modules"]
    assert sorted(k for k in _shapes(unet) if "motion_modules." in k) == official["motion_module_keys"]
    assert _shapes(build_reference_unet(config, device="meta")) == official["reference_unet"]
    assert _shapes(GuidanceEncoder(device="meta")) == official["guidance_encoder"]
    motion_params = sum(p.numel() for n, p in unet.named_parameters() if "motion_modules." in n)
    assert round(motion_params / 1e6) == 453  # the published motion_module.pth's size


def test_half_precision_and_safetensors_conversions_load(tmp_path, release):
    from safetensors.torch import save_file

    root = _linked_copy(release.root, tmp_path / "champ", replace=("champ/reference_unet.pth",
                                                                    "champ/guidance_encoder_depth.pth"))
    sd = torch.load(release.path("reference_unet"), weights_only=True)
    save_file({k: v.half() for k, v in sd.items()}, str(root / "champ" / "reference_unet.safetensors"))
    ge = torch.load(release.path("guidance_encoder_depth"), weights_only=True)
    save_file({k: v.bfloat16() for k, v in ge.items()}, str(root / "champ" / "guidance_encoder_depth.safetensors"))
    converted = ChampRelease.from_folder(root)
    assert converted.path("reference_unet").suffix == ".safetensors"
    ref = champ_files.load_reference_unet(converted, dtype=torch.bfloat16)
    assert ref.conv_in.weight.dtype == torch.bfloat16
    assert torch.equal(ref.conv_in.weight, sd["conv_in.weight"].half().bfloat16())
    encoder = champ_files.load_guidance_encoder(converted, "depth", dtype=torch.float32)
    assert torch.equal(encoder.conv_in.weight, ge["conv_in.weight"].bfloat16().float())


def test_components_are_shared_through_the_cache(models_dir):
    release = ChampRelease.find()
    before = CACHE.loads
    a = champ_files.load_component(release, "guidance_encoder_dwpose", device=torch.device("cpu"))
    b = champ_files.load_component(release, "guidance_encoder_dwpose", device=torch.device("cpu"))
    assert a is b and CACHE.loads == before + 1
    assert isinstance(a.on_device(), GuidanceEncoder)


# ------------------------------------------------------------------------------- errors

def _linked_copy(src: Path, dst: Path, replace=()) -> Path:
    """``dst``: every file of the release ``src`` symlinked, except ``replace`` (left out)."""
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel not in replace:
                os.symlink(path, target)
    return dst


def _tampered(release, tmp_path, rel: str, edit) -> ChampRelease:
    root = _linked_copy(release.root, tmp_path / "champ", replace=(rel,))
    sd = torch.load(release.root / rel, weights_only=True)
    edit(sd)
    torch.save(sd, root / rel)
    return ChampRelease.from_folder(root)


def test_missing_files_are_listed_with_where_to_get_them(tmp_path, release):
    root = _linked_copy(release.root, tmp_path / "champ",
                        replace=("champ/motion_module.pth", "sd-vae-ft-mse/config.json"))
    with pytest.raises(files.ModelFileMissing) as err:
        ChampRelease.from_folder(root)
    msg = str(err.value)
    assert "champ/motion_module.pth" in msg and "sd-vae-ft-mse/config.json" in msg
    assert "huggingface.co/fudan-generative-ai/champ" in msg and str(root) in msg


def test_no_release_gives_the_folder_and_download(tmp_path):
    files.set_models_dir(tmp_path / "models")
    try:
        with pytest.raises(files.ModelFileMissing, match="champ/denoising_unet.pth") as err:
            ChampRelease.find()
    finally:
        files.set_models_dir(None)
    assert str(tmp_path / "models" / "champ") in str(err.value) and "huggingface.co" in str(err.value)


def test_truncated_file_names_the_file(tmp_path, release):
    rel = "champ/denoising_unet.pth"
    root = _linked_copy(release.root, tmp_path / "champ", replace=(rel,))
    data = (release.root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2])
    with pytest.raises(files.ModelFileInvalid, match="could not be read") as err:
        champ_files.load_denoising_unet(ChampRelease.from_folder(root))
    assert str(root / rel) in str(err.value) and "Champ denoising UNet" in str(err.value)


def test_renamed_key_names_the_file_and_both_keys(tmp_path, release):
    def rename(sd):
        sd["attentions.5.proj_inn.weight"] = sd.pop("attentions.5.proj_in.weight")

    broken = _tampered(release, tmp_path, "champ/guidance_encoder_normal.pth", rename)
    with pytest.raises(files.ModelFileInvalid) as err:
        champ_files.load_guidance_encoder(broken, "normal")
    msg = str(err.value)
    assert "guidance_encoder_normal.pth" in msg
    assert "missing keys: attentions.5.proj_in.weight" in msg and "unexpected keys: attentions.5.proj_inn.weight" in msg


def test_wrong_shape_names_the_file_and_the_tensor(tmp_path, release):
    key = "up_blocks.1.motion_modules.2.temporal_transformer.proj_in.weight"

    def widen(sd):
        sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1] + 1)

    broken = _tampered(release, tmp_path, "champ/motion_module.pth", widen)
    with pytest.raises(files.ModelFileInvalid) as err:
        champ_files.load_denoising_unet(broken)
    msg = str(err.value)
    assert "motion_module.pth" in msg and f"{key}: file (32, 33) vs expected (32, 32)" in msg


def test_reference_unet_may_lack_only_the_output_layers(tmp_path, release):
    def drop(sd):
        del sd["conv_in.bias"]

    broken = _tampered(release, tmp_path, "champ/reference_unet.pth", drop)
    with pytest.raises(files.ModelFileInvalid, match="missing keys: conv_in.bias"):
        champ_files.load_reference_unet(broken)

    def add_outputs(sd):
        sd["conv_norm_out.weight"], sd["conv_out.weight"] = torch.ones(32), torch.zeros(4, 32, 3, 3)

    full = _tampered(release, tmp_path / "b", "champ/reference_unet.pth", add_outputs)
    champ_files.load_reference_unet(full)  # a complete diffusers UNet file is accepted too


def test_broken_sd_config_names_config_json(tmp_path, release):
    rel = "stable-diffusion-v1-5/unet/config.json"
    root = _linked_copy(release.root, tmp_path / "champ", replace=(rel,))
    config = json.loads((release.root / rel).read_text())
    config["down_block_types"] = config["down_block_types"][:3]
    (root / rel).write_text(json.dumps(config))
    with pytest.raises(files.ModelFileInvalid, match="Stable Diffusion 1.5") as err:
        ChampRelease.from_folder(root).unet_config()
    assert str(root / rel) in str(err.value)


def test_catalog_lists_every_release_file_in_the_champ_folder():
    champ = [m for m in catalog.MODELS.values() if m.folder == "champ"]
    assert len(champ) == 10 and all(m.url == "https://huggingface.co/fudan-generative-ai/champ" for m in champ)
    assert "champ" in catalog.FOLDERS


# ------------------------------------------------------------------------------- modules

def test_guidance_encoder_maps_frames_to_latent_features():
    torch.manual_seed(0)
    encoder = GuidanceEncoder().eval()  # the official widths
    nn_params = sum(p.numel() for p in encoder.parameters())
    assert encoder.conv_out.weight.abs().sum() == 0  # zero-initialised, as in the official code
    torch.nn.init.normal_(encoder.conv_out.weight, std=0.01)
    with torch.no_grad():
        out = encoder(torch.rand(1, 3, 3, 64, 48))
    assert out.shape == (1, 320, 3, 8, 6) and nn_params > 3_000_000
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        encoder(torch.rand(1, 4, 3, 64, 64))


def test_guidance_encoder_config_is_read_from_the_weights(release):
    sd = torch.load(release.path("guidance_encoder_depth"), weights_only=True)
    config = GuidanceEncoderConfig.from_state_dict(sd)
    assert config.block_out_channels == (16, 32, 32, 32) and config.guidance_embedding_channels == 32
    official = GuidanceEncoder(device="meta").state_dict()
    assert GuidanceEncoderConfig.from_state_dict(official) == GuidanceEncoderConfig()


def test_motion_module_holds_at_most_32_frames():
    torch.manual_seed(0)
    module = MotionModule(32).eval()
    torch.nn.init.normal_(module.temporal_transformer.proj_out.weight, std=0.1)
    assert module.max_frames == 32
    x = torch.randn(32, 32, 2, 2)  # 32 frames of one sample, folded into the batch
    with torch.no_grad():
        assert module(x, num_frames=32).shape == x.shape
        with pytest.raises(ValueError, match="at most 32 frame"):
            module(torch.randn(33, 32, 2, 2), num_frames=33)


def test_unet_refuses_windows_longer_than_the_position_encoding():
    unet = UNet3DConditionModel(UNet3DConfig(**TINY), device="meta")
    with pytest.raises(ValueError, match="at most 32 frames"):
        unet.check_inputs(torch.empty(1, 4, 33, 16, 16, device="meta"), torch.empty(1, 1, 32, device="meta"), None)


def test_motion_modules_mix_frames_and_nothing_else_does(models):
    """With motion modules every frame's output depends on the other frames; without them
    (stage-1 UNet) frames are independent."""
    unet = models["denoising_unet"]
    torch.manual_seed(1)
    x = torch.randn(1, 4, 3, 16, 16)
    context = torch.randn(1, 1, 32)
    y = x.clone()
    y[:, :, 2] += 1.0  # change the last frame only
    out_x, out_y = unet(x, 500, context), unet(y, 500, context)
    assert (out_x[:, :, 0] - out_y[:, :, 0]).abs().max() > 1e-4
    still = UNet3DConditionModel(UNet3DConfig(**TINY, use_motion_module=False)).eval()
    still.load_state_dict({k: v for k, v in unet.state_dict().items() if "motion_modules." not in k})
    assert torch.allclose(still(x, 500, context)[:, :, 0], still(y, 500, context)[:, :, 0], atol=1e-5)


def test_reference_attention_pairs_blocks_by_width_then_order():
    config = UNet3DConfig(block_out_channels=(32, 32, 32, 64), cross_attention_dim=32)
    ref = build_reference_unet(config, device="meta")
    unet = UNet3DConditionModel(config, device="meta")
    names = [n for n, _ in transformer_blocks(ref)]
    assert len(names) == 16 and names[0] == "mid_block.attentions.0.transformer_blocks.0"  # widest first
    assert names[1:3] == ["down_blocks.0.attentions.0.transformer_blocks.0",
                          "down_blocks.0.attentions.1.transformer_blocks.0"]
    assert names[-1] == "up_blocks.3.attentions.2.transformer_blocks.0"
    attention = ReferenceAttention(ref, unet)
    assert all(w == r for w, r in attention.pairs) and [w for w, _ in attention.pairs] == names


def test_reference_attention_write_and_read(models):
    unet, ref = models["denoising_unet"], models["reference_unet"]
    torch.manual_seed(2)
    latents = torch.randn(1, 4, 3, 16, 16).repeat(2, 1, 1, 1, 1)
    clip = torch.randn(1, 1, 32)
    context = torch.cat([torch.zeros_like(clip), clip])  # CFG batch: [uncond, cond]
    plain = unet(latents, 700, context)
    with ReferenceAttention(ref, unet) as attention:
        attention.write(torch.randn(1, 4, 16, 16), clip)
        banks = attention.banks
        assert len(banks) == 16 and banks["down_blocks.0.attentions.0.transformer_blocks.0"].shape == (1, 256, 32)
        assert banks["mid_block.attentions.0.transformer_blocks.0"].dtype == torch.float16  # as the official code
        with attention.reading(uncond_first_half=True):
            read = unet(latents, 700, context)
        assert torch.equal(unet(latents, 700, context), plain)  # outside `reading`: no reference
    assert torch.allclose(read[:1], plain[:1], atol=1e-5)  # uncond half: plain self-attention
    assert (read[1:] - plain[1:]).abs().max() > 1e-3  # cond half: sees the reference
    assert all(type(b.attn1.processor).__name__ == "AttnProcessor2_0" for _, b in transformer_blocks(unet))


# --------------------------------------------------------------------- parity (official code)

@pytest.fixture(scope="module")
def goldens(release):
    data = np.load(GOLDEN / "champ_tiny_goldens.npz")
    script = _golden_script()
    for name in ("denoising_unet", "reference_unet", "motion_module", "guidance_encoder_depth"):
        if script.fixture_digest(release.path(name)) != str(data[f"fixture_digest_{name}"]):
            pytest.fail("the Champ fixture changed since the goldens were made: rerun "
                        "tests/golden/make_champ_goldens.py (see its docstring)")
    return data, script.upsample8


def test_guidance_encoders_match_the_official_code(models, goldens):
    data, upsample8 = goldens
    outs = [models[f"guidance_encoder_{g}"](torch.from_numpy(upsample8(data[f"guidance_in_{g}"])))
            for g in champ_files.GUIDANCE_TYPES]
    np.testing.assert_allclose(outs[0].numpy(), data["guidance_out_depth"], atol=1e-5)
    np.testing.assert_allclose(torch.stack(outs).sum(0).numpy(), data["guidance_sum"], atol=1e-4)


def test_denoising_unet_and_reference_attention_match_the_official_code(models, goldens):
    data, _ = goldens
    unet, ref = models["denoising_unet"], models["reference_unet"]
    latents, context = torch.from_numpy(data["unet_latents"]), torch.from_numpy(data["unet_context"])
    guidance = torch.from_numpy(data["guidance_sum"]).repeat(2, 1, 1, 1, 1)
    t = int(data["unet_timestep"])
    np.testing.assert_allclose(unet(latents, t, context, guidance).numpy(), data["unet_out_plain"], atol=1e-4)
    with ReferenceAttention(ref, unet) as attention:
        attention.write(torch.from_numpy(data["ref_latents"][1:]), context[1:])  # the conditional reference pass
        with attention.reading(uncond_first_half=True):
            out = unet(latents, t, context, guidance)
    np.testing.assert_allclose(out.numpy(), data["unet_out_reference"], atol=1e-4)


def test_official_pipeline_goldens_are_reproduced_by_a_plain_loop(models, goldens):
    """The official aggregation pipeline (3 DDIM steps, CFG 3.5, windows [0..23] and the
    wrapping [20..29, 0..13]) redone with these modules, diffusers' DDIM and a plain loop: the
    reference the sampler stage must match (official quirk kept: linear betas)."""
    from diffusers import DDIMScheduler
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image
    from transformers import CLIPImageProcessor

    data, upsample8 = goldens
    size, frames = 128, data["pipe_latents_init"].shape[2]
    reference = Image.fromarray(upsample8(data["pipe_ref_image"], axes=(0, 1)))
    pixels = CLIPImageProcessor().preprocess(reference.resize((224, 224)), return_tensors="pt").pixel_values
    clip = models["image_encoder"](pixels).image_embeds[:, None]  # one token
    np.testing.assert_allclose(clip[:, 0].numpy(), data["pipe_clip_embeds"], atol=1e-5)
    image = VaeImageProcessor(vae_scale_factor=8).preprocess(reference, height=size, width=size)
    ref_latents = models["vae"].encode(image).latent_dist.mean * champ_files.LATENT_SCALE
    np.testing.assert_allclose(ref_latents.numpy(), data["pipe_ref_latents"], atol=1e-4)
    features = 0
    for g in champ_files.GUIDANCE_TYPES:
        maps = torch.from_numpy(upsample8(data[f"pipe_guidance_{g}"], axes=(1, 2))).float() / 255.0
        features = features + models[f"guidance_encoder_{g}"](maps.permute(3, 0, 1, 2)[None])
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1,
                              clip_sample=False, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                              prediction_type="v_prediction")
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == data["pipe_timesteps"].tolist()
    windows = data["pipe_windows"].tolist()
    latents = torch.from_numpy(data["pipe_latents_init"])
    context = torch.cat([torch.zeros_like(clip), clip])
    unet = models["denoising_unet"]
    with ReferenceAttention(models["reference_unet"], unet) as attention:
        attention.write(ref_latents, clip)
        with attention.reading(uncond_first_half=True):
            for i, t in enumerate(scheduler.timesteps):
                total, count = torch.zeros(2, *latents.shape[1:]), torch.zeros(frames)
                for w in windows:
                    total[:, :, w] += unet(latents[:, :, w].repeat(2, 1, 1, 1, 1), t, context,
                                           features[:, :, w].repeat(2, 1, 1, 1, 1))
                    count[w] += 1
                uncond, cond = (total / count[:, None, None]).chunk(2)
                latents = scheduler.step(uncond + 3.5 * (cond - uncond), t, latents).prev_sample
                np.testing.assert_allclose(latents.numpy(), data[f"pipe_latents_step{i}"], atol=5e-4)
