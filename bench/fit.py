"""Accuracy and speed of body fitting on the synthetic Anny set (tests/body/synthetic.py), one
JSON object per line on stdout.

    python bench/fit.py                                   # 120-frame clips, 512x768, CPU
    python bench/fit.py --frames 60 --clips adult_turn,half_body --device cuda

Per variant (``clean``: exact keypoints; ``noisy``: σ = 3 px noise per coordinate, 10% of the
points missing, 5-frame limb dropouts), over the four clips (woman turning past profile, child
crossing the hands, heavy man under a panning camera, half-body close-up):

* ``fit_<variant>_keypoint_error_mean`` / ``_p95``: px between the fitted body's projected body
  and foot keypoints and the TRUE ones (every true point inside the frame, seen by the
  "detector" or not);
* ``fit_<variant>_silhouette_iou_mean`` / ``_min``: fitted mesh vs true silhouette, per frame;
* ``fit_<variant>_acceleration_error``: mean ‖a_fit − a_true‖ of those keypoints (px/frame²),
  with ``true_acceleration`` and ``fit_acceleration``, the mean magnitudes, alongside;
* ``fit_masks_*``: the clean keypoints plus the true masks;
* ``fit_reference_iou_*``: each clip's first frame alone, with its mask;
* ``fit_seconds_per_frame`` / ``fit_cpu_seconds_per_frame``: wall and process CPU time of
  fitting one 120-frame clip (keypoints only); the CPU figure is the one to compare on a machine
  shared with other jobs.

Targets (issue): clean ≤ 3 px mean, ≤ 8 px p95, IoU ≥ 0.75; noisy ≤ 5 px, IoU ≥ 0.70,
acceleration error ≤ 3; masks IoU ≥ 0.88 mean, ≥ 0.75 min; reference IoU ≥ 0.90;
≤ 0.5 s/frame on 2 CPU cores. Lines with a target say whether it is met (``target``, ``met``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parents[1]


def _metrics(syn, seq, clip, frames=slice(None)):
    """(per-point errors of in-frame true points, per-frame IoU, acceleration figures)."""
    from marionette.nodes.body.silhouette import mask_iou, render_silhouettes

    true = clip.keypoints2d[frames][:, :24].copy()
    inside = ((true[..., 0] >= 0) & (true[..., 0] <= clip.width - 1) & (true[..., 1] >= 0)
              & (true[..., 1] <= clip.height - 1))
    true[~inside] = np.nan
    err = syn.body_keypoint_error(seq.keypoints2d[:, :24], true)
    sil = render_silhouettes(seq.vertices, seq.faces, seq.K, clip.height, clip.width)
    iou = mask_iou(sil, clip.masks[frames])
    acc = (float("nan"),) * 3
    if len(seq) >= 3:
        fit = seq.keypoints2d[:, :24]
        a_fit = fit[2:] - 2 * fit[1:-1] + fit[:-2]
        a_true = true[2:] - 2 * true[1:-1] + true[:-2]
        acc = (syn.acceleration_error(fit, true), float(np.nanmean(np.linalg.norm(a_true, axis=-1))),
               float(np.nanmean(np.linalg.norm(a_fit, axis=-1)[np.isfinite(a_true).all(-1)])))
    return err[np.isfinite(err)], iou, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--clips", default=None, help="comma-separated subset of the synthetic clips")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: keypoints,masks,reference,speed")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common.import_pack()
    sys.path.insert(0, str(ROOT / "tests" / "body"))
    import synthetic as syn
    from marionette.nodes.body.fit import FitConfig, fit_sequence
    from marionette.nodes.body.models import load_body_model

    warnings.simplefilter("ignore", RuntimeWarning)  # bad-frame reports
    model = load_body_model("anny", device=args.device, dtype=getattr(torch, args.dtype))
    clips = args.clips.split(",") if args.clips else list(syn.CLIPS)
    skip = set(filter(None, args.skip.split(",")))
    settings = {"frames": args.frames, "size": f"{syn.WIDTH}x{syn.HEIGHT}", "device": args.device,
                "dtype": args.dtype, "threads": torch.get_num_threads(), "model": "anny", "clips": clips,
                "commit": common.commit()}

    def emit(name, value, unit, target=None, better="lower", **extra):
        rec = {"name": name, "value": round(float(value), 4), "unit": unit}
        if target is not None:
            rec["target"] = target
            rec["met"] = bool(value <= target if better == "lower" else value >= target)
        rec.update(extra)
        rec["settings"] = settings
        print(json.dumps(rec), flush=True)

    config = FitConfig()
    data = {}

    def clip_of(name, variant):
        if (name, variant) not in data:
            data[(name, variant)] = syn.make_clip(model, name, args.frames, variant)
        return data[(name, variant)]

    targets = {"clean": (3.0, 8.0, 0.75, None), "noisy": (5.0, None, 0.70, 3.0)}
    if "keypoints" not in skip:
        for variant in syn.VARIANTS:
            errs, ious, accs = [], [], []
            for c in clips:
                clip = clip_of(c, variant)
                seq = fit_sequence(model, clip.keypoints, clip.width, clip.height, config=config)
                e, iou, acc = _metrics(syn, seq, clip)
                errs.append(e)
                ious.append(iou)
                accs.append(acc)
                emit(f"fit_{variant}_{c}_keypoint_error_mean", e.mean(), "px")
                emit(f"fit_{variant}_{c}_silhouette_iou_mean", iou.mean(), "IoU")
            e, iou, acc = np.concatenate(errs), np.concatenate(ious), np.nanmean(np.array(accs), 0)
            t_mean, t_p95, t_iou, t_acc = targets[variant]
            emit(f"fit_{variant}_keypoint_error_mean", e.mean(), "px", t_mean)
            emit(f"fit_{variant}_keypoint_error_p95", np.percentile(e, 95), "px", t_p95)
            emit(f"fit_{variant}_silhouette_iou_mean", iou.mean(), "IoU", t_iou, better="higher")
            emit(f"fit_{variant}_silhouette_iou_min", iou.min(), "IoU")
            emit(f"fit_{variant}_acceleration_error", acc[0], "px/frame^2", t_acc,
                 true_acceleration=round(float(acc[1]), 4), fit_acceleration=round(float(acc[2]), 4))
    if "masks" not in skip:
        ious, errs = [], []
        for c in clips:
            clip = clip_of(c, "clean")
            seq = fit_sequence(model, clip.keypoints, clip.width, clip.height, masks=clip.masks, config=config)
            e, iou, _ = _metrics(syn, seq, clip)
            ious.append(iou)
            errs.append(e)
            emit(f"fit_masks_{c}_silhouette_iou_mean", iou.mean(), "IoU")
        iou = np.concatenate(ious)
        emit("fit_masks_silhouette_iou_mean", iou.mean(), "IoU", 0.88, better="higher")
        emit("fit_masks_silhouette_iou_min", iou.min(), "IoU", 0.75, better="higher")
        emit("fit_masks_keypoint_error_mean", np.concatenate(errs).mean(), "px")
    if "reference" not in skip:
        ious = []
        for c in clips:
            clip = clip_of(c, "clean")
            seq = fit_sequence(model, clip.keypoints[:1], clip.width, clip.height, masks=clip.masks[:1],
                               config=config)
            _, iou, _ = _metrics(syn, seq, clip, frames=slice(0, 1))
            ious.append(float(iou[0]))
            emit(f"fit_reference_{c}_iou", iou[0], "IoU")
        emit("fit_reference_iou_mean", float(np.mean(ious)), "IoU", 0.90, better="higher")
        emit("fit_reference_iou_min", float(np.min(ious)), "IoU")
    if "speed" not in skip:
        clip = clip_of(clips[0], "clean")
        fit_sequence(model, clip.keypoints[:8], clip.width, clip.height, config=config)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fit_sequence(model, clip.keypoints, clip.width, clip.height, config=config)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        emit("fit_seconds_per_frame", wall / len(clip), "s/frame", 0.5, clip=clips[0])
        emit("fit_cpu_seconds_per_frame", cpu / len(clip), "cpu-s/frame", clip=clips[0])


if __name__ == "__main__":
    main()
