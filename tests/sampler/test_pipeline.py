"""The sampler loop (nodes/sampler/pipeline.py) against the official Champ pipeline.

Goldens: tests/golden/champ_tiny_goldens.npz, written by tests/golden/make_champ_goldens.py
from the official code (fudan-generative-vision/champ 02e5533, ``MultiGuidance2LongVideoPipeline``)
on the tiny fixture release, fp32 on the CPU.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.nodes.sampler import champ_files, pipeline
from marionette.nodes.sampler.champ_files import ChampRelease

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_SCRIPT = GOLDEN / "make_champ_goldens.py"
TOL = 1e-3


@pytest.fixture(scope="module")
def release(fixture_models):
    return ChampRelease.from_folder(fixture_models / "champ")


@pytest.fixture(scope="module")
def get(release):
    return pipeline.module_source({c: champ_files.load(release, c) for c in champ_files.COMPONENTS})


@pytest.fixture(scope="module")
def goldens(release):
    spec = importlib.util.spec_from_file_location("make_champ_goldens", GOLDEN_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = np.load(GOLDEN / "champ_tiny_goldens.npz")
    for name in ("denoising_unet", "reference_unet", "motion_module", "guidance_encoder_depth"):
        if script.fixture_digest(release.path(name)) != str(data[f"fixture_digest_{name}"]):
            pytest.fail(f"the Champ fixture changed since the goldens were made: rerun {GOLDEN_SCRIPT} (see its docstring)")
    return data, script.upsample8


def _case(data, upsample8, prefix: str):
    reference = torch.from_numpy(upsample8(data[f"{prefix}_ref_image"], axes=(0, 1))).float() / 255.0
    maps = {g: torch.from_numpy(upsample8(data[f"{prefix}_guidance_{g}"], axes=(1, 2))).float() / 255.0
            for g in pipeline.GUIDANCE_TYPES}
    return reference, maps


def _run_parity(get, data, upsample8, prefix: str, steps: int, cfg: float, seed: int, kept: list[int]):
    reference, maps = _case(data, upsample8, prefix)
    size = maps["depth"].shape[1]
    frames = maps["depth"].shape[0]
    np.testing.assert_array_equal(pipeline.initial_latents((1, 4, frames, size // 8, size // 8), seed, torch.float32,
                                                           "cpu").numpy(), data[f"{prefix}_latents_init"])
    assert [list(w) for w in data[f"{prefix}_windows"].tolist()] == pipeline.context_windows(frames)
    features = pipeline.encode_guidance(get, maps, size, size)
    result = pipeline.animate(get, reference, features, size, size, steps=steps, guidance_scale=cfg, seed=seed,
                              resize_to_reference=False, decode_chunk=3)
    lat_err = np.abs(result.latents.numpy() - data[f"{prefix}_latents_step{steps - 1}"]).max()
    video = result.frames[kept].permute(0, 3, 1, 2).numpy()
    vid_err = np.abs(video - data[f"{prefix}_video"].astype(np.float32)).max()
    print(f"{prefix}: max |latents - official| = {lat_err:.2e}, max |frames - official| = {vid_err:.2e}")
    assert lat_err < TOL and vid_err < TOL
    return result


def test_multi_window_wraparound_matches_official_pipeline(get, goldens):
    """30 frames, windows [0..23] and [20..29, 0..13], 3 steps, CFG 3.5, seed 42."""
    data, upsample8 = goldens
    result = _run_parity(get, data, upsample8, "pipe", steps=3, cfg=3.5, seed=42, kept=[0, 29])
    assert result.frames.shape == (30, 128, 128, 3)


def test_single_window_matches_official_pipeline(get, goldens):
    data, upsample8 = goldens
    if "single_latents_init" not in data.files:
        pytest.skip("the goldens hold no single-window case; rerun tests/golden/make_champ_goldens.py")
    n = data["single_latents_init"].shape[2]
    _run_parity(get, data, upsample8, "single", steps=int(data["single_steps"]), cfg=float(data["single_cfg"]),
                seed=int(data["single_seed"]), kept=[0, n - 1])


def test_windows_follow_the_official_schedule():
    assert pipeline.context_windows(100)[-1] == list(range(80, 100)) + [0, 1, 2, 3]
    assert [w[0] for w in pipeline.context_windows(100)] == [0, 20, 40, 60, 80]
    assert pipeline.context_windows(24) == [list(range(24))]
    assert pipeline.context_windows(5) == [list(range(5))]


def test_scheduler_is_the_official_one():
    s = pipeline.make_scheduler()
    s.set_timesteps(20)
    assert s.timesteps.tolist() == list(range(999, 0, -50))
    assert s.config.beta_schedule == "linear" and s.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="beta_schedule"):
        pipeline.make_scheduler("cosine")


def _tiny_inputs(frames=3, size=128):  # 128: the tiny UNet's bottom level is then 2x2
    g = torch.Generator().manual_seed(0)
    return torch.rand(size, size, 3, generator=g), {"depth": torch.rand(frames, size, size, 3, generator=g)}


def test_input_checks(get):
    reference, maps = _tiny_inputs()
    with pytest.raises(ValueError, match="multiples of 8"):
        pipeline.encode_guidance(get, maps, 60, 128)
    with pytest.raises(ValueError, match="same number of frames"):
        pipeline.encode_guidance(get, {"depth": maps["depth"], "normal": maps["depth"][:2]}, 128, 128)
    with pytest.raises(ValueError, match="at least 1 frame"):
        pipeline.encode_guidance(get, {"depth": maps["depth"][:0]}, 128, 128)
    with pytest.raises(ValueError, match="unknown guidance"):
        pipeline.encode_guidance(get, {"pose": maps["depth"]}, 128, 128)
    with pytest.raises(ValueError, match="semantic mask"):
        pipeline.encode_guidance(get, {"semantic_map": maps["depth"]}, 128, 128, semantic_mask=torch.ones(3, 8, 8))
    features = pipeline.encode_guidance(get, maps, 128, 128)
    assert features.shape == (1, 32, 3, 16, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        pipeline.animate(get, reference, features, 128, 124, steps=1)
    with pytest.raises(ValueError, match="encoded for 128x128"):
        pipeline.animate(get, reference, features, 256, 128, steps=1)
    with pytest.raises(ValueError, match="between 1 and 32"):
        pipeline.animate(get, reference, features, 128, 128, steps=1, context_frames=33)
    with pytest.raises(ValueError, match="steps"):
        pipeline.animate(get, reference, features, 128, 128, steps=0)


def test_progress_previews_and_cancel(get):
    reference, maps = _tiny_inputs()
    features = pipeline.encode_guidance(get, maps, 128, 128)
    calls = []

    def progress(done, total=None, preview=None):
        calls.append((done, total, preview))
        if preview is not None and done == 1:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        pipeline.animate(get, reference, features, 128, 128, steps=3, progress=progress)
    assert [c[0] for c in calls] == [1]
    assert calls[0][2].size == (16, 16)

    seen = []
    out = pipeline.animate(get, reference, features, 128, 128, steps=2, progress=lambda d, t=None, preview=None:
                           seen.append((d, t, preview is not None)))
    assert seen[:2] == [(1, 2, True), (2, 2, True)] and all(s[:2] == (2, 2) for s in seen[2:])
    assert out.frames.shape == (3, 128, 128, 3) and out.latents.shape == (1, 4, 3, 16, 16)


def test_reference_size_and_no_cfg_quirk(get):
    reference, maps = _tiny_inputs(frames=2)
    reference = reference[:96]  # a 96x128 reference: frames come back at its size
    features = pipeline.encode_guidance(get, maps, 128, 128)
    out = pipeline.animate(get, reference, features, 128, 128, steps=1, guidance_scale=1.0)
    assert out.frames.shape == (2, 96, 128, 3)
    assert torch.isfinite(out.frames).all()
