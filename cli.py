"""Marionette from the command line, without a ComfyUI server: the same stage functions the
nodes call, on files.

    python cli.py sample                      # the main job on the bundled sample, embedded defaults:
                                              # fit Anny to the reference and the driving keypoints, give
                                              # the driving poses the reference's shape, render Champ's
                                              # depth / normal / semantic / skeleton guidance videos
    python cli.py pose VIDEO [--models-dir M] # DWPose keypoints JSON + skeleton video
    python cli.py draw KEYPOINTS.json         # keypoints JSON -> skeleton video
    python cli.py models [--models-dir M]     # which model files are found, which are missing

Outputs go to ``--out`` (default ``out/``). ComfyUI never imports this file.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SAMPLE_DIR = ROOT / "workflows" / "inputs"


def _pack():
    """Import this folder as the package ``marionette`` (its modules use relative imports)."""
    if "marionette" not in sys.modules:
        spec = importlib.util.spec_from_file_location("marionette", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["marionette"] = module
        spec.loader.exec_module(module)
    return sys.modules["marionette"]


def _progress(label: str):
    start = time.time()

    def report(done, total=None, preview=None):
        if total:
            print(f"\r{label}: {done}/{total} ({time.time() - start:.1f} s)", end="" if done < total else "\n",
                  flush=True)

    return report


def draw_keypoints_file(keypoints: Path, out: Path, fps: float, width: int = 0, height: int = 0) -> Path:
    from marionette.nodes import keypoints as kp_format
    from marionette.nodes.media import write_video
    from marionette.nodes import skeleton as draw

    frames = kp_format.load_json(keypoints)
    images = draw.draw_frames(frames, width=width or None, height=height or None)
    return write_video(images, out, fps=fps)


def guidance_pipeline(reference_pose: Path, reference_mask: Path | None, driving_pose: Path, out: Path,
                      fps: float = 24.0, quality: str = "fast", body: str = "anny") -> dict[str, Path]:
    """Reference + driving keypoints → fitted, shape-aligned bodies → Champ's guidance videos
    (the guidance_from_video workflow without the DWPose step), written into ``out``."""
    import numpy as np
    from PIL import Image

    from marionette.nodes import keypoints as kp_format
    from marionette.nodes import skeleton
    from marionette.nodes.body import align, fit, models
    from marionette.nodes.body import io as body_io
    from marionette.nodes.body.node import fit_config
    from marionette.nodes.media import write_video
    from marionette.nodes.render import maps
    from marionette.nodes.render.node import body_keypoints

    model = models.load_body_model(body)
    config = fit_config(quality)

    def dense(path):
        arrays = kp_format.pose_keypoint_to_dense(kp_format.load_json(path))
        return arrays.keypoints[:, 0], int(arrays.widths[0]), int(arrays.heights[0])

    kps, w, h = dense(reference_pose)
    mask = None
    if reference_mask is not None:
        alpha = np.asarray(Image.open(reference_mask).convert("RGBA"))[..., 3]
        mask = (alpha > 127)[None]
    print("fitting the reference ...")
    ref = fit.fit_sequence(model, kps, w, h, masks=mask, config=fit.FitConfig(), progress=_progress("reference"))
    kps, w, h = dense(driving_pose)
    print(f"fitting {len(kps)} driving frames ...")
    drv = fit.fit_sequence(model, kps, w, h, config=config, progress=_progress("driving"))
    aligned = align.align_shape(ref, drv, model)
    out.mkdir(parents=True, exist_ok=True)
    written = {"bodies": body_io.save_npz(aligned, out / "bodies.npz")}
    rendered = maps.render_guidance(aligned, progress=_progress("render"))
    poses = body_keypoints(aligned, aligned.width, aligned.height)
    rendered["dwpose"] = skeleton.draw_frames(poses)
    for name in ("depth", "normal", "semantic", "dwpose"):
        written[name] = write_video(rendered[name], out / f"{name}.mp4", fps=fps)
    written["mask"] = write_video(np.repeat(rendered["mask"][..., None], 3, -1), out / "mask.mp4", fps=fps)
    return written


def cmd_sample(args) -> None:
    out = Path(args.out) / "sample"
    written = guidance_pipeline(SAMPLE_DIR / "marionette_reference_pose.json", SAMPLE_DIR / "marionette_reference.png",
                                SAMPLE_DIR / "marionette_sample_pose.json", out, quality=args.quality)
    print("guidance of the bundled sample:")
    for name, path in written.items():
        print(f"  {name:9s} {path}")


def cmd_pose(args) -> None:
    from marionette.models_loader import files
    from marionette.nodes import keypoints as kp_format
    from marionette.nodes.media import read_video, write_video
    from marionette.nodes import skeleton as draw
    from marionette.nodes.pose import dwpose

    if args.models_dir:
        files.set_models_dir(args.models_dir)
    frames, fps = read_video(args.video)
    result = dwpose.estimate_video(frames, progress=_progress("DWPose"))
    print(result.summary())
    out = Path(args.out)
    poses = kp_format.dense_to_pose_keypoint(result.keypoints, result.width, result.height)
    kp_format.save_json(poses, out / (Path(args.video).stem + "_pose.json"))
    write_video(draw.draw_frames(poses), out / (Path(args.video).stem + "_skeleton.mp4"), fps=fps)
    print(f"wrote {out}")


def cmd_draw(args) -> None:
    out = Path(args.out) / (Path(args.keypoints).stem + "_skeleton.mp4")
    print(f"wrote {draw_keypoints_file(Path(args.keypoints), out, args.fps, args.width, args.height)}")


def cmd_models(args) -> None:
    from marionette.models_loader import catalog, files

    if args.models_dir:
        files.set_models_dir(args.models_dir)
    report = {}
    for entry in catalog.MODELS.values():
        try:
            report[entry.id] = {"found": str(files.find(entry))}
        except files.ModelFileMissing as exc:
            report[entry.id] = {"missing": str(exc)}
    print(json.dumps(report, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="output folder (default: out/)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="run the main job on the bundled sample")
    p.add_argument("--quality", default="fast", choices=["fast", "balanced", "best"],
                   help="fitting effort for the driving clip (default: fast)")
    p = sub.add_parser("pose", help="DWPose keypoints and skeleton video of a video file")
    p.add_argument("video")
    p.add_argument("--models-dir", help="a ComfyUI-style models folder (default: <ComfyUI>/models)")
    p = sub.add_parser("draw", help="draw a keypoints JSON file as a skeleton video")
    p.add_argument("keypoints")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--height", type=int, default=0)
    p = sub.add_parser("models", help="list model files found and missing")
    p.add_argument("--models-dir")
    args = parser.parse_args(argv)
    _pack()
    try:
        {"sample": cmd_sample, "pose": cmd_pose, "draw": cmd_draw, "models": cmd_models}[args.command](args)
    except (ValueError, FileNotFoundError) as exc:  # clear messages, no traceback for user errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
