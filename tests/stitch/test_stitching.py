"""The long-video stitching algorithms (nodes/stitch/stitching.py): the clip plan, seam blending,
Lab colour matching and the clip stream, on synthetic frames and the bench's stand-in generator."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from marionette.nodes.stitch import stitching as st
from marionette.nodes.types import Stitching

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import standin  # noqa: E402  (bench/standin.py)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _texture(frames=6, h=32, w=40, seed=0):
    """Smooth textured frames in [0.15, 0.85] that change a little from frame to frame."""
    base = torch.nn.functional.interpolate(_rand(1, 3, h // 4, w // 4, seed=seed), size=(h, w), mode="bilinear",
                                           align_corners=False)[0].permute(1, 2, 0)
    shift = torch.linspace(0, 0.05, frames).view(frames, 1, 1, 1)
    return (0.15 + 0.7 * base)[None].expand(frames, h, w, 3) * (1 - shift) + shift * 0.5


# ------------------------------------------------------------------------------ plan

def test_validate_returns_a_clean_copy():
    plan = st.validate(Stitching(mode="chain", clip_frames=16.0, overlap=2.0, color_strength=1))
    assert plan.clip_frames == 16 and isinstance(plan.clip_frames, int)
    assert plan.overlap == 2 and isinstance(plan.overlap, int) and isinstance(plan.color_strength, float)
    assert st.validate(Stitching()) == Stitching()


@pytest.mark.parametrize("fields, words", [
    (dict(mode="loop"), ["mode", "'loop'", "aggregate", "chain"]),
    (dict(blend="cubic"), ["blend", "'cubic'", "pyramid"]),
    (dict(color_match="histogram"), ["color_match", "'histogram'", "reference"]),
    (dict(clip_frames=40), ["clip_frames", "32", "position encoding", "40"]),
    (dict(clip_frames=1, overlap=0), ["clip_frames", "between 2"]),
    (dict(clip_frames=8, overlap=8), ["overlap", "clip_frames - 1 (7)", "got 8"]),
    (dict(overlap=-1), ["overlap", "got -1"]),
    (dict(color_strength=1.5), ["color_strength", "between 0 and 1", "1.5"]),
    (dict(color_strength=float("nan")), ["color_strength"]),
])
def test_validate_messages(fields, words):
    with pytest.raises(ValueError) as info:
        st.validate(Stitching(**fields))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("frames, clip, overlap", [
    (100, 24, 4), (41, 24, 4), (45, 24, 4), (24, 24, 4), (7, 24, 4), (50, 8, 0), (33, 6, 4), (1, 2, 1), (25, 24, 4)])
def test_clip_ranges_cover_the_video_with_constant_seams(frames, clip, overlap):
    ranges = st.clip_ranges(frames, clip, overlap)
    assert ranges[0].start == 0 and ranges[-1].stop == frames
    assert all(1 <= len(r) <= clip for r in ranges)
    for a, b in zip(ranges, ranges[1:]):
        assert a.stop - b.start == overlap, "every seam shares exactly `overlap` frames"
        assert len(b) >= overlap + 1, "every later clip adds at least one new frame"
    assert all(len(r) == clip for r in ranges[:-1]), "only the last clip may be shorter"
    covered = sorted({f for r in ranges for f in r})
    assert covered == list(range(frames))


def test_clip_ranges_examples_and_errors():
    assert st.clip_ranges(45, 24, 4) == [range(0, 24), range(20, 44), range(40, 45)]
    assert st.clip_ranges(24, 24, 4) == [range(0, 24)]
    with pytest.raises(ValueError, match="overlap"):
        st.clip_ranges(10, 4, 4)
    with pytest.raises(ValueError, match="at least 1 frame"):
        st.clip_ranges(0, 4, 1)


# ------------------------------------------------------------------------------ seams

def test_linear_blend_weights_ramp_across_the_overlap():
    prev, nxt = torch.zeros(4, 3, 5, 3), torch.ones(4, 3, 5, 3)
    out = st.blend_seam(prev, nxt, "linear")
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert torch.allclose(st.seam_weights(1), torch.tensor([0.5]))
    assert torch.equal(st.blend_seam(prev, nxt, "none"), nxt)


def test_blend_seam_rejects_mismatched_sides_and_unknown_modes():
    with pytest.raises(ValueError, match="same shape"):
        st.blend_seam(torch.zeros(4, 8, 8, 3), torch.zeros(3, 8, 8, 3))
    with pytest.raises(ValueError, match="blend"):
        st.blend_seam(torch.zeros(2, 8, 8, 3), torch.zeros(2, 8, 8, 3), "cubic")
    with pytest.raises(ValueError, match=r"\[k, H, W, 3\]"):
        st.blend_seam(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))


@pytest.mark.parametrize("size", [(32, 48), (37, 53), (5, 7)])
def test_laplacian_pyramid_reconstructs_exactly(size):
    x = _rand(2, 3, *size)
    pyramid = st.laplacian_pyramid(x, 5)
    assert len(pyramid) >= (2 if min(size) >= 6 else 1)
    assert torch.allclose(st.collapse(pyramid), x, atol=1e-6)


def test_pyramid_blend_of_equal_inputs_is_the_input():
    a = _rand(4, 40, 56, 3)
    assert torch.allclose(st.blend_seam(a, a.clone(), "pyramid"), a, atol=1e-5)


def test_pyramid_blend_lies_between_its_inputs():
    # flat frames: only the low-pass level is non-zero, and it is cross-faded linearly
    out = st.blend_seam(torch.full((4, 16, 16, 3), 0.2), torch.full((4, 16, 16, 3), 0.8), "pyramid")
    assert torch.allclose(out[:, 5, 5, 0], torch.tensor([0.32, 0.44, 0.56, 0.68]), atol=1e-5)
    # textured frames: each frame moves monotonically from prev to next, never beyond either
    a, b = _rand(4, 40, 56, 3, seed=1), _rand(4, 40, 56, 3, seed=2)
    out = st.blend_seam(a, b, "pyramid")
    to_a = (out - a).flatten(1).norm(dim=1) / (b - a).flatten(1).norm(dim=1)
    to_b = (out - b).flatten(1).norm(dim=1) / (b - a).flatten(1).norm(dim=1)
    assert (to_a <= 1).all() and (to_b <= 1).all() and (to_a.diff() > 0).all()
    assert (out >= torch.minimum(a, b) - 0.06).all() and (out <= torch.maximum(a, b) + 0.06).all()


def test_pyramid_switches_fine_detail_faster_than_linear():
    # a checkerboard on one side, its inverse on the other: a cross-fade shows both (ghosting)
    check = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float()
    a = (0.3 + 0.4 * check)[None, :, :, None].expand(4, 32, 32, 3)
    b = (0.7 - 0.4 * check)[None, :, :, None].expand(4, 32, 32, 3)
    contrast = lambda x: (x[:, 8:24, 8:24] - x[:, 8:24, 8:24].mean(dim=(1, 2), keepdim=True)).abs().mean(dim=(1, 2, 3))
    lin, pyr = contrast(st.blend_seam(a, b, "linear")), contrast(st.blend_seam(a, b, "pyramid"))
    # first and last frames: the linear fade leaves 60 % contrast, the pyramid nearly all of it
    assert lin[0] < 0.13 and pyr[0] > 0.18 and pyr[-1] > 0.18
    # the low-pass level (the mean) still fades over the whole overlap
    mean = st.blend_seam(a, b + 0.1, "pyramid").mean(dim=(1, 2, 3))
    assert (mean.diff() > 0.015).all()


# ------------------------------------------------------------------------------ colour

def test_lab_known_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                        [0.5, 0.5, 0.5]], dtype=torch.float64)
    want = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.2408, 80.0925, 67.2032],
                         [87.7347, -86.1827, 83.1793], [32.2970, 79.1875, -107.8602], [53.3890, 0.0, 0.0]],
                        dtype=torch.float64)
    assert torch.allclose(st.srgb_to_lab(rgb), want, atol=2e-3)
    assert torch.allclose(st.srgb_to_lab(rgb.float()).double(), want, atol=1e-2)


def test_lab_round_trip():
    x = _rand(3, 17, 19, 3)
    assert st.srgb_to_lab(x).shape == x.shape
    assert (st.lab_to_srgb(st.srgb_to_lab(x)) - x).abs().max() < 1e-4
    x64 = x.double()
    assert (st.lab_to_srgb(st.srgb_to_lab(x64)) - x64).abs().max() < 1e-10
    # out-of-gamut Lab is clipped into [0, 1], not NaN
    out = st.lab_to_srgb(torch.tensor([[150.0, 200.0, -200.0], [-20.0, 0.0, 0.0]]))
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def _delta_e(a, b, mask=None):
    sa, sb = st.lab_stats(a, mask), st.lab_stats(b, mask)
    return float((sa.mean - sb.mean).norm())


def test_match_colors_removes_a_cast():
    clean = _texture(frames=6)
    reference = st.ColorReference.from_image(clean[0])
    cast = (clean * torch.tensor([1.12, 1.0, 0.82]) * 0.9).clamp(0, 1)
    assert _delta_e(cast, clean) > 5
    fixed = st.match_colors(cast, reference)
    assert _delta_e(fixed, clean) < 0.5
    # a gain in RGB is not exactly affine in Lab, so pixels keep a small residual
    assert (fixed - clean).abs().mean() < 0.35 * (cast - clean).abs().mean()
    # strength 0 is the identity, 0.5 half-way (in Lab, where the map is linear)
    assert torch.allclose(st.match_colors(cast, reference, strength=0.0), cast)
    half = st.lab_stats(st.match_colors(cast, reference, strength=0.5)).mean
    want = (st.lab_stats(cast).mean + st.lab_stats(fixed).mean) / 2
    assert torch.allclose(half, want, atol=0.3)


def test_correction_is_bounded():
    source = st.LabStats(mean=torch.tensor([50.0, 0.0, 0.0], dtype=torch.float64),
                         std=torch.tensor([1.0, 10.0, 40.0], dtype=torch.float64), weight=1.0)
    target = st.ColorReference(mean=torch.tensor([50.0, 80.0, 0.0], dtype=torch.float64),
                               std=torch.tensor([10.0, 10.0, 4.0], dtype=torch.float64))
    t = st.fit_transform(source, target, max_ratio=2.0, max_shift=25.0)
    assert torch.allclose(t.scale, torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    moved = t.scale * source.mean + t.shift - source.mean
    assert float(moved.norm()) == pytest.approx(25.0)
    # a genuinely different clip (flat grey vs a colourful reference) is nudged, not wrecked
    grey = torch.full((3, 16, 16, 3), 0.5)
    colourful = st.ColorReference.from_image(_rand(32, 32, 3))
    out = st.match_colors(grey, colourful)
    assert _delta_e(out, grey) <= 25.0 + 1e-3 and torch.isfinite(out).all()


def test_one_transform_per_clip_keeps_the_clip_own_changes():
    clip = _texture(frames=8, seed=3)
    ramp = torch.linspace(0.8, 1.1, 8).view(8, 1, 1, 1)
    clip = (clip * ramp).clamp(0, 1)
    clip[5] = clip[1]  # a repeated frame must stay identical to its twin
    reference = st.ColorReference.from_image((_texture(frames=1, seed=3)[0] * torch.tensor([0.9, 1.0, 1.1])))
    out = st.match_colors(clip, reference)
    transform = st.color_transform(clip, reference)
    assert torch.allclose(out, transform.apply(clip))
    assert torch.equal(out[5], out[1])
    # every frame went through the same Lab map: L of each frame = scale * L_in + shift
    lab_in, lab_out = st.srgb_to_lab(clip).double(), st.srgb_to_lab(out).double()
    for f in range(8):
        fit = lab_out[f, ..., 0].flatten() - transform.scale[0] * lab_in[f, ..., 0].flatten()
        assert (fit - transform.shift[0]).abs().median() < 0.05
    # the brightness ramp survives (per-frame matching would flatten it)
    L = lab_out[..., 0].mean(dim=(1, 2))
    assert (L[[0, 2, 3, 4, 6, 7]].diff() > 0.5).all()


def test_mask_limits_the_statistics():
    clean = _texture(frames=4, seed=5)
    mask = torch.zeros(32, 40)
    mask[:, :20] = 1
    cast = clean.clone()
    cast[..., :20, :] = (cast[..., :20, :] * torch.tensor([1.1, 0.95, 0.85])).clamp(0, 1)  # cast on the masked side
    cast[..., 20:, :] = 1 - cast[..., 20:, :]  # the other side: entirely different content
    reference = st.ColorReference.from_image(clean[0], mask)
    masked = st.match_colors(cast, reference, mask=mask)
    assert _delta_e(masked, clean, mask) < 0.5
    assert _delta_e(st.match_colors(cast, reference), clean, mask) > 1.0
    with pytest.raises(ValueError, match="selects no pixels"):
        st.lab_stats(clean, torch.zeros(32, 40))
    with pytest.raises(ValueError, match="colour mask"):
        st.lab_stats(clean, torch.ones(31, 40))


# ------------------------------------------------------------------------------ the stream

def _video(frames, h=6, w=5):
    """A video whose every frame is distinct (frame index in the pixel values)."""
    return (torch.arange(frames, dtype=torch.float32).view(frames, 1, 1, 1) / frames
            + 0.01 * _rand(frames, h, w, 3)).clamp(0, 1)


@pytest.mark.parametrize("frames, clip, overlap", [(100, 24, 4), (45, 24, 4), (20, 24, 4), (33, 6, 4), (50, 8, 0),
                                                   (27, 8, 7)])
@pytest.mark.parametrize("blend", ["none", "linear", "pyramid"])
def test_stream_emits_every_frame_once_in_order_with_bounded_memory(frames, clip, overlap, blend):
    video = _video(frames, 8, 8)
    stream = st.ClipStream(overlap, blend=blend)
    frame_bytes = video[0].numel() * 4
    out = []
    for r in st.clip_ranges(frames, clip, overlap):
        piece = video[r.start:r.stop].clone()
        before = piece.clone()
        ready = stream.push(piece)
        assert torch.equal(piece, before), "the stream must not write into the caller's clip"
        assert ready.shape[0] == len(r) - stream.held
        assert stream.held <= overlap
        held = stream._held
        if held is not None:  # a copy, not a view keeping the whole clip alive
            assert held.untyped_storage().nbytes() <= overlap * frame_bytes
        out.append(ready)
    out.append(stream.finish())
    assert stream.held == 0
    got = torch.cat(out)
    # the seams of a video cut from one piece join back into it: each frame once, in order
    assert got.shape == video.shape and stream.emitted == frames
    assert torch.allclose(got, video, atol=1e-5)


def test_stream_blends_the_seams_and_applies_one_transform_per_clip():
    a, b = torch.zeros(6, 4, 4, 3), torch.ones(6, 4, 4, 3)
    stream = st.ClipStream(2, blend="linear")
    first = stream.push(a)
    second = stream.push(b)
    rest = stream.finish()
    got = torch.cat([first, second, rest])[:, 0, 0, 0]
    assert torch.allclose(got, torch.tensor([0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1.0]))
    assert len(stream.transforms) == 2


def test_stream_rejects_clips_that_do_not_chain():
    stream = st.ClipStream(4)
    stream.push(torch.rand(8, 4, 4, 3))
    with pytest.raises(ValueError, match="more than overlap=4"):
        stream.push(torch.rand(4, 4, 4, 3))
    with pytest.raises(ValueError, match="same frame size"):
        stream.push(torch.rand(8, 5, 4, 3))
    short = st.ClipStream(4)
    short.push(torch.rand(3, 4, 4, 3))
    with pytest.raises(ValueError, match="first clip had 3 frames"):
        short.push(torch.rand(8, 4, 4, 3))
    with pytest.raises(ValueError, match="anchor"):
        st.ClipStream(4, anchor="first")


def test_previous_anchor_matches_each_clip_to_the_last_one():
    clean = _texture(frames=12, seed=7)
    reference = st.ColorReference.from_image(clean[0])
    stream = st.ClipStream(4, blend="none", reference=reference, anchor="previous")
    first = stream.push(clean[:8] * 0.95)
    tail = st.lab_stats(stream._held)
    stream.push((clean[4:12] * torch.tensor([1.1, 1.0, 0.9])).clamp(0, 1))
    head = st.lab_stats(stream.transforms[1].apply((clean[4:8] * torch.tensor([1.1, 1.0, 0.9])).clamp(0, 1)))
    assert torch.allclose(head.mean, tail.mean, atol=0.05)
    assert _delta_e(first, clean[:4]) < 0.5  # the first clip is matched to the reference


def _background_drift(video, scene, ranges):
    bg = scene.background_mask(range(video.shape[0]))
    first, last = ranges[0], ranges[-1]
    a = st.lab_stats(video[first.start:first.stop], bg[first.start:first.stop]).mean
    b = st.lab_stats(video[last.start:last.stop], bg[last.start:last.stop]).mean
    return float((a - b).norm())


def test_stream_on_the_standin_removes_drift_and_softens_seams():
    scene = standin.StandInScene(height=32, width=48, clip_frames=8, overlap=2, seed=3, cast_step=0.0,
                                 cast_trend=(0.04, 0.0, -0.04), noise=0.0, offset_px=0.0)
    ranges = st.clip_ranges(8 + 5 * 6, 8, 2)
    clips = list(standin.generate_clips(scene, ranges))
    assert [c.shape[0] for _, c in clips] == [len(r) for r in ranges]
    assert torch.equal(clips[1][1], scene(ranges[1], clips[0][1][-2:])), "the stand-in is deterministic"

    def run(blend, reference):
        stream = st.ClipStream(2, blend=blend, reference=reference)
        return torch.cat([stream.push(c) for _, c in clips] + [stream.finish()])

    raw = run("none", None)
    fixed = run("linear", st.ColorReference.from_image(scene.reference()))
    assert raw.shape[0] == fixed.shape[0] == ranges[-1].stop
    assert _background_drift(raw, scene, ranges) > 8
    assert _background_drift(fixed, scene, ranges) < 1.5
    # the biggest step at each seam shrinks when the seam is blended and the colours matched
    step = lambda v, t: float((v[t] - v[t - 1]).abs().mean())  # noqa: E731
    seams = [r.start for r in ranges[1:]]
    assert sum(step(fixed, t) for t in seams) < 0.5 * sum(step(raw, t) for t in seams)
