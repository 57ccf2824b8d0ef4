"""Long videos in the sampler (nodes/sampler/pipeline.py ``chain`` mode, clips.py, lazy_guidance.py)
on the tiny fixture release: clip by clip, pinned overlaps, one reference write, streaming."""
from __future__ import annotations

import gc
import warnings

import pytest
import torch

from marionette.nodes.sampler import champ_files, clips, pipeline
from marionette.nodes.sampler import node as sampler_node
from marionette.nodes.sampler.champ_files import ChampRelease
from marionette.nodes.sampler.lazy_guidance import LazyGuidance
from marionette.nodes.types import Stitching

SIZE = 128  # the tiny UNet's bottom level is then 2x2
CHAIN = Stitching(mode="chain", clip_frames=4, overlap=1)


@pytest.fixture(scope="module")
def modules(fixture_models):
    release = ChampRelease.from_folder(fixture_models / "champ")
    return {c: champ_files.load(release, c) for c in champ_files.COMPONENTS}


@pytest.fixture(scope="module")
def get(modules):
    return pipeline.module_source(modules)


def _video(seed, frames, size=SIZE):
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def inputs(get):
    """A reference and eager features of a 16-frame video (two maps)."""
    maps = {"depth": _video(1, 16), "dwpose": _video(2, 16)}
    return _video(0, 1)[0], pipeline.encode_guidance(get, maps, SIZE, SIZE), maps


def _chain(get, reference, features, **kw):
    kw.setdefault("stitching", CHAIN)
    return pipeline.animate(get, reference, features, SIZE, SIZE, steps=2, resize_to_reference=False, **kw)


def _held_frames() -> int:
    """Frames of SIZE x SIZE held by live tensors anywhere in the process (unique storages)."""
    seen, frames = set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if type(obj) is torch.Tensor and obj.ndim == 4 and obj.shape[-1] == 3 and obj.shape[1] == SIZE:
                ptr = obj.untyped_storage().data_ptr()
                if ptr not in seen:
                    seen.add(ptr)
                    frames += obj.untyped_storage().nbytes() // (SIZE * SIZE * 3 * obj.element_size())
    return frames


def test_clip_plan_is_accepted_and_broken_plans_are_not():
    from marionette.nodes.types import clip_ranges

    for frames, clip, overlap in [(1, 4, 1), (4, 4, 1), (10, 4, 1), (16, 4, 1), (100, 24, 4), (37, 24, 8), (5, 2, 0)]:
        clips.check_plan(clip_ranges(frames, clip, overlap), frames)
    with pytest.raises(ValueError, match="does not chain"):
        clips.check_plan([range(0, 4), range(4, 8)], 9)
    with pytest.raises(ValueError, match="does not chain"):
        clips.check_plan([range(0, 40)], 40)


def test_chain_pins_overlap_writes_the_reference_once_and_emits_every_frame(get, modules, inputs):
    reference, features, _ = inputs
    features = features[:, :, :10]  # clips [0, 4), [3, 7), [6, 10)
    writes, windows = [], []
    hooks = [modules["reference_unet"].register_forward_hook(lambda *a: writes.append(1)),
             modules["denoising_unet"].register_forward_pre_hook(lambda m, a: windows.append(a[0].shape[2]))]
    latents, batches = [], []
    try:
        out = _chain(get, reference, features, frame_sink=lambda f: batches.append(f.clone()),
                     latent_sink=lambda r, x: latents.append((r, x)))
    finally:
        for h in hooks:
            h.remove()
    assert out.frames is None and out.latents is None
    assert out.clips == [range(0, 4), range(3, 7), range(6, 10)]
    assert len(writes) == 1, "the reference bank must be written once for the whole video"
    assert windows == [4] * 6, "each clip, its pinned frame included, is one UNet window per step"
    assert [r for r, _ in latents] == out.clips
    for (_, prev), (_, nxt) in zip(latents, latents[1:]):
        assert torch.equal(nxt[:, :, :1], prev[:, :, -1:]), "pinned frames end as the previous clip's latents"
        assert not torch.allclose(nxt[:, :, 1:2], prev[:, :, -1:])
    assert [b.shape[0] for b in batches] == [4, 3, 3]  # the default stream: each frame once, in order
    frames = torch.cat(batches)
    # without a sink the same frames come back (decoded from the same latents)
    again = _chain(get, reference, features)
    assert torch.equal(again.frames, frames)
    assert torch.equal(again.latents, torch.cat([latents[0][1]] + [x[:, :, 1:] for _, x in latents[1:]], dim=2))


def test_pinned_frames_follow_the_previous_clip_at_every_step(get, modules, inputs):
    reference, features, _ = inputs
    features = features[:, :, :7]  # clips [0, 4), [3, 7)
    seen = []
    hook = modules["denoising_unet"].register_forward_pre_hook(lambda m, a: seen.append(a[0][:1].clone()))
    latents = []
    try:
        _chain(get, reference, features, guidance_scale=1.0, latent_sink=lambda r, x: latents.append(x))
    finally:
        hook.remove()
    scheduler = pipeline.make_scheduler()
    scheduler.set_timesteps(2)
    noise = pipeline.initial_latents((1, 4, 4, SIZE // 8, SIZE // 8), clips.clip_seed(42, 1), torch.float32, "cpu")
    for x, t in zip(seen[2:], scheduler.timesteps):  # the second clip's UNet inputs
        a = float(scheduler.alphas_cumprod[int(t)])
        want = a ** 0.5 * latents[0][:, :, -1:] + (1 - a) ** 0.5 * noise[:, :, :1] if a > 0 else noise[:, :, :1]
        torch.testing.assert_close(x[:, :, :1], want, rtol=0, atol=1e-6)
    assert float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])]) == 0.0  # zero SNR: pure noise at first


def test_streaming_holds_about_one_clip(get, inputs):
    reference, features, _ = inputs  # 16 frames: 5 clips of 4 sharing 1
    from marionette.nodes.stitch.stitching import ClipStream

    peaks, sizes, count = [], [], [0]

    class Watched(ClipStream):
        def push(self, clip, mask=None):
            sizes.append(clip.shape[0])
            peaks.append(_held_frames())
            return super().push(clip, mask)

    def sink(frames):  # a file-like sink: keeps nothing
        peaks.append(_held_frames())
        count[0] += frames.shape[0]

    gc.collect()
    base = _held_frames()  # the inputs (guidance maps, reference) and other tests' tensors
    out = _chain(get, reference, features, frame_sink=sink, clip_stream=Watched(1, blend="linear"))
    assert out.frames is None and count[0] == 16
    assert sizes == [4] * 5
    # one clip decoded (+ its permuted copy) and the stream's held overlap, never the video
    assert max(peaks) - base <= 2 * 4 + 1 < 16, (base, peaks)


def test_one_clip_chain_equals_aggregate(get, inputs):
    reference, features, _ = inputs
    features = features[:, :, :4]
    chain = _chain(get, reference, features)
    aggregate = _chain(get, reference, features, stitching=Stitching(mode="aggregate", clip_frames=4, overlap=1))
    assert torch.equal(chain.latents, aggregate.latents) and torch.equal(chain.frames, aggregate.frames)


def test_clip_noise_does_not_depend_on_the_video_length(get, inputs):
    reference, features, _ = inputs
    short, long = [], []
    _chain(get, reference, features[:, :, :7], latent_sink=lambda r, x: short.append(x))
    _chain(get, reference, features[:, :, :10], latent_sink=lambda r, x: long.append(x))
    assert len(short) == 2 and len(long) == 3
    assert all(torch.equal(a, b) for a, b in zip(short, long))
    assert clips.clip_seed(42, 0) == 42 and len({clips.clip_seed(42, c) for c in range(100)}) == 100


def test_lazy_guidance_equals_eager_for_any_frames(get):
    maps = {"depth": _video(3, 11), "semantic_map": _video(4, 11), "dwpose": _video(5, 11, size=96)}
    mask = (_video(6, 11)[..., 0] > 0.3).float()
    strengths = {"depth": 0.7, "semantic_map": 1.0, "dwpose": 1.3}
    eager = pipeline.encode_guidance(get, maps, SIZE, SIZE, strengths=strengths, semantic_mask=mask, chunk_frames=4)
    lazy = LazyGuidance(get, maps, SIZE, SIZE, strengths=strengths, semantic_mask=mask, chunk_frames=4,
                        cache_chunks=2)
    assert lazy.shape == tuple(eager.shape) and lazy.nbytes == eager.numel() * 4 and lazy.encoded_chunks == 0
    for frames in [range(11), range(3, 7), [10, 0, 1], [5], [2, 2, 9], range(8, 11)]:
        assert torch.equal(lazy.take(frames), eager[:, :, list(frames)]), frames
    before = lazy.encoded_chunks
    lazy.take(range(8, 11))
    assert lazy.encoded_chunks == before  # cached
    with pytest.raises(IndexError, match="outside"):
        lazy.take([11])
    one = LazyGuidance(get, maps, SIZE, SIZE, strengths=strengths, semantic_mask=mask[:1])
    assert torch.equal(one.take(range(11)), pipeline.encode_guidance(get, maps, SIZE, SIZE, strengths=strengths,
                                                                     semantic_mask=mask[:1]))
    with pytest.raises(ValueError, match="semantic mask"):
        LazyGuidance(get, maps, SIZE, SIZE, semantic_mask=mask[:3])


def test_animate_with_lazy_guidance_equals_eager(get, inputs):
    reference, _, maps = inputs
    maps = {k: v[:6] for k, v in maps.items()}
    # the same chunks as the lazy source: an encoder call's batch size can change the last bits
    features = pipeline.encode_guidance(get, maps, SIZE, SIZE, chunk_frames=4)
    lazy = LazyGuidance(get, maps, SIZE, SIZE, chunk_frames=4, cache_chunks=1)
    windows = Stitching(mode="aggregate", clip_frames=4, overlap=1)  # two windows, the second wraps
    eager = pipeline.animate(get, reference, features, SIZE, SIZE, steps=1, stitching=windows,
                             resize_to_reference=False)
    out = pipeline.animate(get, reference, lazy, SIZE, SIZE, steps=1, stitching=windows, resize_to_reference=False)
    assert torch.equal(out.latents, eager.latents) and torch.equal(out.frames, eager.frames)


# ----------------------------------------------------------------------------- the node

@pytest.fixture()
def champ(models_dir):
    return sampler_node.MarionetteLoadChamp.execute(".", "fp32")[0]


def _encode(champ, frames, **kw):
    return sampler_node.MarionetteEncodeGuidance.execute(champ, SIZE, SIZE, depth=_video(1, frames), **kw)[0]


def test_node_chain_mode_streams_into_the_output(champ, monkeypatch):
    guidance = _encode(champ, 7, eager_limit_mb=0)
    assert guidance.lazy and guidance.features is None and guidance.take(range(2)).shape == (1, 32, 2, 16, 16)
    eager = _encode(champ, 7)
    assert not eager.lazy and torch.equal(eager.take([6, 0]), guidance.take([6, 0]))
    totals = []

    def progress_callback(total):
        totals.append(total)
        return lambda done, total_=None, preview=None: totals.append((done, total_))

    monkeypatch.setattr(sampler_node, "progress_callback", progress_callback)
    stitching = Stitching(mode="chain", clip_frames=4, overlap=1, blend="linear", color_match="reference")
    frames, latent = sampler_node.MarionetteAnimate.execute(_video(9, 1, 96), champ, guidance, 0, 0, 2, 3.5, 3,
                                                            resize_to_reference=True, stitching=stitching)
    assert frames.shape == (7, 96, 96, 3) and latent["samples"].shape == (7, 4, 16, 16)
    assert totals[0] == 4 and (4, 4) in totals and (1, 4) in totals  # 2 clips x 2 steps
    # aggregate through the node: lazy and eager guidance give the same video
    a = sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, guidance, 0, 0, 1, 3.5, 3)
    b = sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, eager, 0, 0, 1, 3.5, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["samples"], b[1]["samples"])


def test_node_cancel_mid_clip(champ, monkeypatch):
    guidance = _encode(champ, 7)
    seen = []

    def progress_callback(total):
        def progress(done, total_=None, preview=None):
            seen.append(done)
            if done == 3:  # the second clip's first step
                raise InterruptedError("Cancel")
        return progress

    monkeypatch.setattr(sampler_node, "progress_callback", progress_callback)
    with pytest.raises(InterruptedError):
        sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, guidance, 0, 0, 2, 3.5, 0,
                                               stitching=CHAIN)
    assert seen == [1, 2, 2, 3]  # two steps, the first clip's decode, then cancelled inside the second clip


def test_node_stitching_checks(champ):
    guidance = _encode(champ, 3)
    with pytest.raises(ValueError, match="clip_frames"):
        sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, guidance, 0, 0, 1, 3.5, 0,
                                               stitching=Stitching(mode="chain", clip_frames=40))
    with pytest.raises(ValueError, match="stitching mode"):
        sampler_node.MarionetteAnimate.execute(_video(9, 1), champ, guidance, 0, 0, 1, 3.5, 0,
                                               stitching=Stitching(mode="loop"))
