"""Seams and colour drift of ``chain`` mode (nodes/stitch/stitching.py), one JSON object per line.

    python bench/long_video.py                  # 10 clips of 24 frames, overlap 4, 96x128, 3 seeds
    python bench/long_video.py --clips 20 --seeds 5

The clips come from the stand-in generator (bench/standin.py: a synthetic scene with a per-clip
colour cast and exposure that random-walk from clip to clip, a per-clip content offset, noise,
and pinned first frames followed only partly), since real weights are absent. Each setting
runs the same clips through ``ClipStream`` and prints, averaged over the seeds (``worst``: the
worst seed):

- ``seam_discontinuity``: per seam, the largest mean absolute frame-to-frame difference among
  the ``overlap + 1`` transitions touching the shared frames (from the frame before them to the
  frame after), averaged over seams, divided by the same statistic on windows of ``overlap + 1``
  transitions inside clips (touching no shared frame), so a video without seams scores 1
  whatever its motion (the ``clean`` rows). A blend spreads a jump over the overlap; the
  largest step is what a viewer sees. Target <= 1.2.
- ``seam_sharpness``: background texture contrast (second Laplacian band) in the shared frames
  over that in the other frames; below 1 = ghosting / blur from the cross-fade (averaging also
  lowers the noise, so the floor is not exactly 1).
- ``color_drift_background``: ΔE76 between the mean Lab colour of the background (the stand-in's
  true mask) over the first clip and over the last clip. Target <= 2. The ``clean`` rows measure
  the defect-free video (what the content alone changes).

Memory (``--memory``): peak memory of the real chain-mode sampler streaming to a file for 100 and
1000 frames and their ratio, each in a fresh process (bench/long_video_memory.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)
import standin  # noqa: E402  (bench/standin.py)

SETTINGS = [  # (blend, colour anchor or None, colour statistics over the background only)
    ("none", None, False), ("linear", None, False), ("pyramid", None, False),
    ("none", "reference", False), ("linear", "reference", False), ("pyramid", "reference", False),
    ("linear", "previous", False), ("linear", "reference", True), ("pyramid", "reference", True),
]


def _emit(name, value, unit, **settings):
    print(json.dumps({"name": name, "value": value, "unit": unit, **settings}), flush=True)


def seam_discontinuity(video: torch.Tensor, ranges, overlap: int) -> float:
    """See the module docstring. ``video`` ``[T, H, W, 3]``; ``ranges`` the clip plan."""
    diffs = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))  # diffs[t]: frame t -> t + 1
    shared = torch.zeros(video.shape[0], dtype=torch.bool)
    seams = []
    for r in ranges[1:]:
        shared[r.start:r.start + overlap] = True
        seams.append(float(diffs[r.start - 1:r.start + overlap].max()))  # the overlap + 1 transitions
    # the same statistic on windows of overlap + 1 transitions inside clips, so a video without
    # seams scores 1 whatever its motion
    inside = ~(shared[:-1] | shared[1:])
    windows = [float(diffs[t:t + overlap + 1].max()) for t in range(len(diffs) - overlap)
               if bool(inside[t:t + overlap + 1].all())]
    if not seams or not windows:
        return float("nan")
    return (sum(seams) / len(seams)) / (sum(windows) / len(windows))


def seam_sharpness(video: torch.Tensor, ranges, overlap: int, background: torch.Tensor, st) -> float:
    """Texture contrast of the background in the shared frames relative to the other frames:
    the mean absolute band-pass (second Laplacian band, above the noise) over background pixels.
    1 = as crisp as elsewhere; a cross-fade of misaligned clips shows both textures at part
    contrast (ghosting) and scores lower."""
    band = st.laplacian_pyramid(video.permute(0, 3, 1, 2), 2)[1].abs().mean(1)  # [T, H/2, W/2]
    bg = background[:, ::2, ::2][:, :band.shape[1], :band.shape[2]].float()
    per_frame = (band * bg).sum((1, 2)) / bg.sum((1, 2)).clamp(min=1)
    shared = torch.zeros(video.shape[0], dtype=torch.bool)
    for r in ranges[1:]:
        shared[r.start:r.start + overlap] = True
    if not shared.any():
        return float("nan")
    return float(per_frame[shared].mean() / per_frame[~shared].mean())


def color_drift(video: torch.Tensor, background: torch.Tensor, first: range, last: range, to_lab) -> float:
    """ΔE76 between the mean background Lab colour over the ``first`` and the ``last`` clip."""
    def mean_lab(r):
        lab = to_lab(video[r.start:r.stop])
        m = background[r.start:r.stop].float()[..., None]
        return (lab * m).sum(dim=(0, 1, 2)) / m.sum()
    return float((mean_lab(first) - mean_lab(last)).norm())


def stitch(clips, overlap, st, blend, anchor=None, reference=None, masks=None):
    """The generated ``clips`` (``[(range, clip)]``) through one ``ClipStream``."""
    stream = st.ClipStream(overlap, blend=blend, reference=reference if anchor else None,
                           anchor=anchor or "reference")
    out = [stream.push(clip, None if masks is None else masks[r.start:r.stop]) for r, clip in clips]
    return torch.cat(out + [stream.finish()])


def measure_memory(args, settings) -> None:
    """Peak memory of the real chain-mode sampler for 100 and 1000 frames and their ratio (constant
    memory: about 1), with ``--memory`` (minutes on a CPU); see bench/long_video_memory.py for what
    is measured. Without the flag: one skipped line."""
    if not getattr(args, "memory", False):
        _emit("chain_peak_memory", None, "MiB", **settings, skipped="run with --memory (bench/long_video_memory.py)")
        return
    import long_video_memory  # bench/long_video_memory.py

    long_video_memory.measure(args.memory_frames, threads=args.threads)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--clip-frames", type=int, default=24)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure chain-mode Animate's peak memory (bench/long_video_memory.py; minutes)")
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[100, 1000],
                        help="video lengths for --memory")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.import_pack()
    from marionette.nodes.stitch import stitching as st

    frames = args.clip_frames + (args.clips - 1) * (args.clip_frames - args.overlap)
    ranges = st.clip_ranges(frames, args.clip_frames, args.overlap)
    settings = dict(generator="standin", clips=len(ranges), frames=frames, clip_frames=args.clip_frames,
                    overlap=args.overlap, width=args.width, height=args.height, seeds=args.seeds,
                    commit=common.commit())
    results: dict = {}
    for seed in range(args.seeds):
        scene = standin.StandInScene(args.height, args.width, args.clip_frames, args.overlap, seed=seed)
        background = scene.background_mask(range(frames))
        clips = list(standin.generate_clips(scene, ranges))  # the same raw clips for every setting
        reference = scene.reference()
        refs = {False: st.ColorReference.from_image(reference),
                True: st.ColorReference.from_image(reference, background[0])}
        videos = {("clean", None, False): scene.clean(range(frames))}
        for blend, anchor, masked in SETTINGS:
            videos[blend, anchor, masked] = stitch(clips, args.overlap, st, blend, anchor, refs[masked],
                                                   background if masked else None)
        for key, video in videos.items():
            assert video.shape[0] == frames, (key, video.shape)
            results.setdefault(key, []).append((
                seam_discontinuity(video, ranges, args.overlap),
                seam_sharpness(video, ranges, args.overlap, background, st),
                color_drift(video, background, ranges[0], ranges[-1], st.srgb_to_lab)))
    for (blend, anchor, masked), values in results.items():
        row = dict(video="clean" if blend == "clean" else "stitched", blend=None if blend == "clean" else blend,
                   color_match="reference" if anchor else "none", **settings)
        if anchor:
            row.update(anchor=anchor, color_mask="background" if masked else "none")
        for i, (name, unit, target) in enumerate([("seam_discontinuity", "ratio", 1.2),
                                                  ("seam_sharpness", "ratio", None),
                                                  ("color_drift_background", "deltaE76", 2.0)]):
            v = [x[i] for x in values]
            worst = min(v) if name == "seam_sharpness" else max(v)
            _emit(name, round(sum(v) / len(v), 3), unit, **({"target": target} if target else {}),
                  worst=round(worst, 3), **row)
    measure_memory(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
