"""The sampler stage's nodes end to end on the tiny fixture release, through the V3 stand-in."""
from __future__ import annotations

import pytest
import torch

from marionette.nodes import comfy_bridge
from marionette.nodes.sampler import node as sampler_node
from marionette.nodes.types import ChampModelHandle, GuidanceFeatures

SIZE, FRAMES = 128, 3  # 128: the tiny UNet's bottom level is 2x2


@pytest.fixture()
def champ(models_dir):
    assert sampler_node.release_options() == ["."]
    assert sampler_node.MarionetteLoadChamp.validate_inputs(".", "auto") is True
    handle = sampler_node.MarionetteLoadChamp.execute(".", "fp32")[0]
    assert isinstance(handle, ChampModelHandle) and handle.dtype == torch.float32
    return handle


def _video(seed, frames=FRAMES, size=SIZE):
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


def _guidance(champ, **kw):
    return sampler_node.MarionetteEncodeGuidance.execute(champ, SIZE, SIZE, depth=_video(1), skeleton=_video(2),
                                                         semantic=_video(3),
                                                         semantic_mask=torch.ones(FRAMES, SIZE, SIZE), **kw)[0]


def _animate(champ, guidance, seed, steps=2):
    return sampler_node.MarionetteAnimate.execute(_video(9, 1, 96)[..., :], champ, guidance, 0, 0, steps, 3.5, seed,
                                                  resize_to_reference=False)


def test_schemas_have_tooltips_and_ids():
    for cls in sampler_node.NODES:
        schema = cls.define_schema()
        assert schema.node_id == cls.__name__ and schema.category == "Marionette/sampler" and schema.description
        assert all(i.tooltip for i in schema.inputs), cls
        assert all(o.tooltip for o in schema.outputs), cls
    names = [c.define_schema().display_name for c in sampler_node.NODES]
    assert names == ["Load Champ", "Encode Guidance", "Animate"]


def test_nodes_run_end_to_end(champ):
    guidance = _guidance(champ, skeleton_strength=0.5)
    assert isinstance(guidance, GuidanceFeatures)
    assert guidance.features.shape == (1, 32, FRAMES, SIZE // 8, SIZE // 8)
    assert guidance.maps == ("depth", "semantic_map", "dwpose") and guidance.strengths["dwpose"] == 0.5
    frames, latent = _animate(champ, guidance, seed=5)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and 0 <= frames.min() and frames.max() <= 1
    assert latent["samples"].shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    again, _ = _animate(champ, guidance, seed=5)
    assert torch.equal(frames, again)
    other, _ = _animate(champ, guidance, seed=6)
    assert not torch.allclose(frames, other)


def test_guidance_checks(champ):
    with pytest.raises(ValueError, match="at least one guidance"):
        sampler_node.MarionetteEncodeGuidance.execute(champ, SIZE, SIZE)
    with pytest.raises(ValueError, match="same number of frames"):
        sampler_node.MarionetteEncodeGuidance.execute(champ, SIZE, SIZE, depth=_video(1), normal=_video(2, 2))
    with pytest.raises(ValueError, match="same size"):
        sampler_node.MarionetteEncodeGuidance.execute(champ, SIZE, SIZE, depth=_video(1), normal=_video(2, size=64))
    assert "multiples of 8" in sampler_node.MarionetteEncodeGuidance.validate_inputs(width=100, height=128)
    guidance = _guidance(champ)
    with pytest.raises(ValueError, match="encoded at 128x128"):
        sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, guidance, 256, 128, 1, 3.5, 0)


def test_cancel_stops_the_loop(champ, monkeypatch):
    guidance = _guidance(champ)
    seen = []

    def cancelling(total):
        def progress(done, total_=None, preview=None):
            seen.append(done)
            raise InterruptedError("Cancel")
        return progress

    monkeypatch.setattr(sampler_node, "progress_callback", cancelling)
    with pytest.raises(InterruptedError):
        _animate(champ, guidance, seed=1, steps=5)
    assert seen == [1]


def test_bridge_progress_accepts_previews():
    progress = comfy_bridge.progress_callback(2)
    from PIL import Image

    progress(1, 2, preview=Image.new("RGB", (8, 8)))
