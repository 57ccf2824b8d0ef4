"""Write the pose golden files (tests/golden/pose_*) by running the reference implementations.

The goldens in this folder were made by running this script against:

* Fannovel16/comfyui_controlnet_aux @ e8b689a513c3e6b63edc44066560ca5919c0576e
  (``src/custom_controlnet_aux/dwpose``: ``Wholebody.format_result``, ``encode_poses_as_dict``,
  ``decode_json_as_poses``, ``draw_poses`` and ``util.draw_bodypose/handpose/facepose``);
* controlnet_aux 0.0.10 from PyPI (huggingface/controlnet_aux, ``dwpose/util.py`` and
  ``draw_pose``): the original DWPose annotator layering Champ's training data used;
* opencv-python-headless 5.0.0, matplotlib 3.11.2, numpy 2.4.6.

Only the named functions are taken from the reference files (parsed with ``ast`` and executed
as written), so their model-loading imports (torch, onnxruntime, huggingface_hub) are never
needed; ``body.py`` (OpenPose's network) is replaced by the two NamedTuples util.py imports.

Usage (the mirror lacks some large binary files, so export just the Python sources)::

    mkdir -p $TMP/cnaux && git -C <comfyui_controlnet_aux repo> archive HEAD \\
        src/custom_controlnet_aux/dwpose | tar -x -C $TMP/cnaux
    pip download --no-deps controlnet-aux==0.0.10 -d /tmp
    unzip -q $TMP/controlnet_aux-0.0.10-py3-none-any.whl -d $TMP/hfaux
    pip install opencv-python-headless matplotlib
    python tests/golden/make_pose_goldens.py $TMP/cnaux $TMP/hfaux

Outputs (all small): ``pose_cases.npz`` (the seeded input poses), ``pose_encoded.json`` (the
reference encoder's POSE_KEYPOINT list, one frame per case), and ``pose_<case>_<variant>.png``
drawings. Rerunning with the same references rewrites identical files.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import types
import typing
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# (name, canvas width, canvas height, seed, number of people)
CASES = [
    ("single", 96, 128, 1, 1),
    ("crowd", 512, 384, 2, 3),
    ("edges", 96, 128, 3, 3),
    ("partial", 512, 384, 4, 3),
]
# Drawing switches (body, hands, face) rendered per case.
VARIANTS = {"all": (True, True, True), "body": (True, False, False), "handsface": (False, True, True)}


# ---------------------------------------------------------------------------------------------
# Loading the reference functions
# ---------------------------------------------------------------------------------------------

def _exec_functions(path: Path, names: list[str], namespace: dict, class_name: str | None = None) -> dict:
    """Execute only the top-level functions ``names`` of a source file (or the static methods
    of ``class_name``) in ``namespace``; returns the namespace."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = tree.body
    if class_name:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    picked = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    for node in picked:
        node.decorator_list = []  # @staticmethod
    missing = set(names) - {n.name for n in picked}
    if missing:
        raise SystemExit(f"{path} has no {sorted(missing)}; is this the right commit?")
    module = ast.Module(body=picked, type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)
    return namespace


def load_controlnet_aux(root: Path) -> types.SimpleNamespace:
    """comfyui_controlnet_aux's encoder, decoder and drawing functions."""
    dwpose = root / "src" / "custom_controlnet_aux" / "dwpose"
    pkg = types.ModuleType("cnaux_dwpose")
    pkg.__path__ = [str(dwpose)]
    sys.modules["cnaux_dwpose"] = pkg
    ref_types = _load_module("cnaux_dwpose.types", dwpose / "types.py")
    body_stub = types.ModuleType("cnaux_dwpose.body")  # OpenPose's network: not needed to draw
    body_stub.BodyResult, body_stub.Keypoint = ref_types.BodyResult, ref_types.Keypoint
    sys.modules["cnaux_dwpose.body"] = body_stub
    util = _load_module("cnaux_dwpose.util", dwpose / "util.py")
    ns = {"np": np, "util": util, "json": json, **{k: getattr(typing, k) for k in typing.__all__},
          "PoseResult": ref_types.PoseResult, "BodyResult": ref_types.BodyResult,
          "Keypoint": ref_types.Keypoint, "AnimalPoseResult": ref_types.AnimalPoseResult}
    _exec_functions(dwpose / "__init__.py", ["draw_poses", "decode_json_as_poses", "encode_poses_as_dict"], ns)
    _exec_functions(dwpose / "wholebody.py", ["format_result"], ns, class_name="Wholebody")
    return types.SimpleNamespace(**{k: ns[k] for k in ("draw_poses", "decode_json_as_poses",
                                                        "encode_poses_as_dict", "format_result")})


def load_hf_controlnet_aux(root: Path) -> types.SimpleNamespace:
    """huggingface controlnet_aux 0.0.10's DWPose drawing (the original annotator)."""
    dwpose = root / "controlnet_aux" / "dwpose"
    util = _load_module("hfaux_dwpose_util", dwpose / "util.py")
    ns = _exec_functions(dwpose / "__init__.py", ["draw_pose"], {"np": np, "util": util})
    return types.SimpleNamespace(draw_pose=ns["draw_pose"])


def _load_module(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Seeded poses
# ---------------------------------------------------------------------------------------------

def make_people(seed: int, count: int, width: int, height: int, name: str) -> np.ndarray:
    """``[count, 134, 3]`` float32 DWPose keypoints: a loose figure per person (limbs of random
    direction from a centre, hands around the wrists, a face around the nose), scores uniform
    in 0..1 so about 30 % of points are missing."""
    rng = np.random.default_rng(seed)
    people = np.zeros((count, 134, 3), dtype=np.float32)
    size = min(width, height)
    for p in range(count):
        centre = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
        body = centre + rng.normal(0, 0.22 * size, (24, 2))
        face = body[0] + rng.normal(0, 0.05 * size, (68, 2))
        lhand = body[7] + rng.normal(0, 0.06 * size, (21, 2))
        rhand = body[4] + rng.normal(0, 0.06 * size, (21, 2))
        people[p, :, :2] = np.concatenate([body, face, lhand, rhand])
        people[p, :, 2] = rng.uniform(0, 1, 134)
    if name == "crowd":
        people[1, 92:113, 2] *= 0.25          # person 1: left hand below threshold everywhere
        people[2, 24:92, 2] *= 0.25           # person 2: no face
        people[2, 113:134, 2] = 0.0           # ... and no right hand
    if name == "edges":
        people[0, :, :2] -= (0.5 * width, 0)  # partly off the left side
        people[1, :, :2] += (0, 0.45 * height)  # partly below the bottom
        people[2, :, 2] = rng.uniform(0.29, 0.31, 134)  # right at the threshold
        people[2, ::7, 2] = 0.3
        # points within one pixel of the left/top border: drawn for the body, skipped for
        # hands and face (the reference drops them when int(x) or int(y) is 0)
        people[0, [1, 30, 40, 95, 96, 117], 0] = [0.5, 0.9, 0.2, 0.7, 1.0, 0.99]
        people[1, [31, 100, 101, 120], 1] = [0.4, 0.6, 1.5, 0.0]
        # a visible left hand straddling the right border and a right hand the bottom one
        people[1, 92:113] = np.c_[rng.uniform(width - 20, width + 25, (21, 1)), rng.uniform(10, height - 10, (21, 1)),
                                  np.ones((21, 1))]
        people[0, 113:134] = np.c_[rng.uniform(min(50, width - 11), width - 10, (21, 1)),
                                   rng.uniform(height - 20, height + 25, (21, 1)), np.ones((21, 1))]
        people[:, :, 2] = np.where(people[:, :, 2] > 0.02, people[:, :, 2], 0.5)
    if name == "partial":
        people[0, :18, 2] = 0.1               # person 0: hands and face only, no body
        people[1] = 0.0                       # person 1: an empty slot between two people
    return people


# ---------------------------------------------------------------------------------------------
# Drawing with the references
# ---------------------------------------------------------------------------------------------

def draw_controlnet_aux(ref, people: np.ndarray, width: int, height: int, switches) -> tuple[np.ndarray, dict]:
    """comfyui_controlnet_aux's "Render Pose JSON" path: encode as its DWPose node does, decode
    the dict (pixels as Python floats), draw."""
    poses = ref.format_result(people)
    encoded = ref.encode_poses_as_dict(poses, height, width)
    decoded, _, h, w = ref.decode_json_as_poses(json.loads(json.dumps(encoded)))
    return ref.draw_poses(decoded, h, w, *switches), encoded


def draw_dwpose(hf, people: np.ndarray, width: int, height: int) -> np.ndarray:
    """The original annotator, fed as ``DWposeDetector.__call__`` feeds it (normalised
    coordinates, body subset indices for scores > 0.3, other points below 0.3 set to -1)."""
    candidate = people[:, :, :2].astype(np.float64).copy()
    subset = people[:, :, 2].astype(np.float64).copy()
    nums = len(people)
    candidate[..., 0] /= float(width)
    candidate[..., 1] /= float(height)
    body = candidate[:, :18].copy().reshape(nums * 18, 2)
    score = subset[:, :18]
    for i in range(len(score)):
        for j in range(len(score[i])):
            score[i][j] = int(18 * i + j) if score[i][j] > 0.3 else -1
    candidate[subset < 0.3] = -1
    hands = np.vstack([candidate[:, 92:113], candidate[:, 113:]])
    pose = dict(bodies=dict(candidate=body, subset=score), hands=hands, faces=candidate[:, 24:92])
    return hf.draw_pose(pose, height, width)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("controlnet_aux", type=Path, help="comfyui_controlnet_aux checkout (or exported sources)")
    parser.add_argument("hf_controlnet_aux", type=Path, help="unpacked controlnet_aux 0.0.10 wheel")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    ref = load_controlnet_aux(args.controlnet_aux)
    hf = load_hf_controlnet_aux(args.hf_controlnet_aux)
    print(f"OpenCV {cv2.__version__}, numpy {np.__version__}")

    arrays, encoded_frames = {}, []
    for name, width, height, seed, count in CASES:
        people = make_people(seed, count, width, height, name)
        arrays[f"{name}_keypoints"] = people
        arrays[f"{name}_size"] = np.array([width, height])
        for variant, switches in VARIANTS.items():
            image, encoded = draw_controlnet_aux(ref, people, width, height, switches)
            Image.fromarray(image).save(args.out / f"pose_{name}_controlnet_aux_{variant}.png", optimize=True)
        encoded_frames.append(encoded)
        live = people[np.abs(people).sum(axis=(1, 2)) > 0]  # the annotator never sees empty slots
        Image.fromarray(draw_dwpose(hf, live, width, height)).save(
            args.out / f"pose_{name}_dwpose_all.png", optimize=True)
    np.savez_compressed(args.out / "pose_cases.npz", **arrays)
    (args.out / "pose_encoded.json").write_text(json.dumps(encoded_frames), encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.glob("pose_*"))
    print(f"wrote {len(list(args.out.glob('pose_*')))} files, {total / 1024:.0f} KiB, to {args.out}")


if __name__ == "__main__":
    main()
