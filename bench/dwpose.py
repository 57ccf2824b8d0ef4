"""Frames per second of the DWPose stage (detector + pose model + decoding), one JSON object per
line on stdout.

    python bench/dwpose.py                     # 512 px, CPU and (when available) CUDA
    python bench/dwpose.py --size 768 --frames 16 --device cpu

Uses the real ``yolox_l.onnx`` / ``dw-ll_ucoco_384.onnx`` when the catalog finds them (models
folder, comfyui_controlnet_aux's ckpts, the Hugging Face cache), else writes the tiny fixture
models to a temporary folder and says so (``"models": "fixture"``; those figures measure our
pre/post-processing, not the networks). CUDA runs when torch sees a GPU and onnxruntime-gpu is
installed. Each figure: ``name``, ``value``, ``unit`` and the settings it was measured with.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parents[1]


def _video(frames: int, size: int, seed: int = 0):
    """A ComfyUI IMAGE ``[T, size, size, 3]``: a smooth random picture drifting sideways."""
    import torch

    rng = np.random.default_rng(seed)
    base = rng.random((size // 16 + 2, size // 16 + 2, 3)).astype(np.float32)
    big = np.kron(base, np.ones((16, 16, 1), np.float32))[: size, : size + frames * 4]
    big = np.pad(big, ((0, 0), (0, max(0, size + frames * 4 - big.shape[1])), (0, 0)), mode="edge")
    return torch.from_numpy(np.stack([big[:, 4 * t: 4 * t + size] for t in range(frames)]))


def _find_models(files, catalog, make_fixtures: bool):
    try:
        if make_fixtures:
            raise files.ModelFileMissing("fixtures requested")
        return files.find("dwpose_detector"), files.find("dwpose_pose"), "real"
    except files.ModelFileMissing:
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        import make_models

        out = Path(tempfile.mkdtemp(prefix="marionette-bench-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        paths = make_models.write_dwpose(out)
        print(f"[bench] real DWPose files not found: using the tiny fixture models in {out} (the figures then "
              f"measure pre/post-processing, not the networks)", file=sys.stderr)
        return paths["dwpose_detector"], paths["dwpose_pose"], "fixture"


def run(size: int, frames: int | None, devices: list[str], fixtures: bool) -> list[dict]:
    common.import_pack()
    import onnxruntime as ort
    import torch

    from marionette.models_loader import cache, catalog, files
    from marionette.nodes.pose import dwpose

    det_path, pose_path, kind = _find_models(files, catalog, fixtures)
    has_cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    if "cuda" in devices and not has_cuda:
        print("[bench] CUDA skipped: needs a CUDA GPU and onnxruntime-gpu", file=sys.stderr)
        devices = [d for d in devices if d != "cuda"]
    results = []
    for device in devices:
        n = frames or (32 if kind == "fixture" else 8 if device == "cpu" else 64)
        video = _video(n + 1, size)
        providers = cache.onnx_providers(torch.device(device))
        est = dwpose.DWPoseEstimator(files.open_onnx(det_path, catalog.model("dwpose_detector"), providers),
                                     files.open_onnx(pose_path, catalog.model("dwpose_pose"), providers))
        est(video[:1])  # warm-up: session initialisation, CUDA kernels
        settings = dict(size=size, frames=n, device=device, provider=providers[0] if isinstance(providers[0], str)
                        else providers[0][0], models=kind, threads=os.cpu_count(), commit=common.commit())

        start = time.perf_counter()
        people = est(video[1:])
        seconds = time.perf_counter() - start
        persons = sum(len(p.boxes) for p in people)
        results.append(dict(name="dwpose_fps", value=round(n / seconds, 3), unit="frames/s", **settings,
                            people_per_frame=round(persons / n, 2)))

        # stage split on the same frames: detector (letterbox + network + decode/NMS), pose (crop + network + SimCC)
        bgr = [dwpose.frame_to_bgr(f) for f in video[1:]]
        start = time.perf_counter()
        dets = [est.detect(f) for f in bgr]
        det_s = time.perf_counter() - start
        start = time.perf_counter()
        for f, (boxes, _) in zip(bgr, dets):
            est.estimate(f, boxes)
        pose_s = time.perf_counter() - start
        results.append(dict(name="dwpose_detector_ms", value=round(1000 * det_s / n, 2), unit="ms/frame", **settings))
        results.append(dict(name="dwpose_pose_ms", value=round(1000 * pose_s / max(persons, 1), 2), unit="ms/person",
                            **settings))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="DWPose frames per second (JSON lines).")
    parser.add_argument("--size", type=int, default=512, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames timed (default: 32 on fixtures, 8 on CPU, 64 on CUDA)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--fixtures", action="store_true", help="use the fixture models even if real ones exist")
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for line in run(args.size, args.frames, devices, args.fixtures):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
