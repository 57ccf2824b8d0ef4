"""Seconds per frame of the render stage (depth + normal + semantic + mask), one JSON object per
line on stdout, for every backend available: torch on CPU (and CUDA when torch sees a GPU), and
OpenGL (EGL) when pyrender and an EGL driver are present.

    python bench/render.py                         # 512x768, 16 frames
    python bench/render.py --frames 32 --cpu-threads 0 --width 512 --height 768   # torch's own threads

The mesh is Anny's (about 14k vertices / 27k faces) when the ``anny`` package loads, posed as a
rest body walking through the frames; otherwise a generated mesh of the same size (several
ellipsoids; ``"mesh": "generated"``). The camera is Champ's (focal 5000/256 * max(W, H), body
filling ~85 % of the height). Each figure: ``name``, ``value``, ``unit`` and its settings; the
median over ``--repeats`` runs is reported, with the best run as ``best``. Two figures per run:
wall seconds per frame, and process CPU seconds per frame (all threads), which is what to
compare on a machine shared with other jobs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parents[1]


def _anny_mesh():
    """Anny's rest body as ``(vertices [V,3] in the OpenCV camera axes, faces [F,3], labels [V])``."""
    import anny
    import torch

    model = anny.Anny(skinning_method="lbs")
    with torch.no_grad():
        verts = model()["vertices"][0].double().numpy()
    faces = model.faces.numpy()
    # Anny is z-up, facing -y; the camera frame is y-down, z-forward, so look along +y.
    verts = np.stack([verts[:, 0], -verts[:, 2], verts[:, 1]], 1)
    weights = getattr(model, "dense_vertex_bone_weights", None)
    labels = (weights.argmax(1).numpy() % 24) if weights is not None else np.zeros(len(verts), np.int64)
    return verts, faces, labels


def _generated_mesh():
    """About 14k vertices / 27k faces: ellipsoids for torso, head and limbs, each its own parts."""
    parts = [((0, -0.2, 0), (0.17, 0.3, 0.11), 3), ((0, -0.68, 0), (0.1, 0.12, 0.11), 15),
             ((0, 0.2, 0), (0.16, 0.14, 0.1), 0), ((-0.09, 0.62, 0), (0.07, 0.34, 0.07), 4),
             ((0.09, 0.62, 0), (0.07, 0.34, 0.07), 5), ((-0.33, -0.2, 0), (0.05, 0.3, 0.05), 18),
             ((0.33, -0.2, 0), (0.05, 0.3, 0.05), 19)]
    verts, faces, labels, off = [], [], [], 0
    n_lat, n_lon = 40, 50  # 7 x (38 * 50 + 2) vertices = 13,314, 7 x 2 x 38 x 50 faces = 26,600
    for centre, radii, label in parts:
        th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
        ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
        t, p = np.meshgrid(th, ph, indexing="ij")
        ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
        v = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radii + centre
        idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
        f = [[0, idx(0, j + 1), idx(0, j)] for j in range(n_lon)]  # wound outward
        f += [[len(v) - 1, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)] for j in range(n_lon)]
        for i in range(n_lat - 2):
            for j in range(n_lon):
                f += [[idx(i, j), idx(i, j + 1), idx(i + 1, j + 1)], [idx(i, j), idx(i + 1, j + 1), idx(i + 1, j)]]
        verts.append(v)
        faces.append(np.array(f) + off)
        labels.append(np.full(len(v), label))
        off += len(v)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(labels)


def _sequence(frames: int, width: int, height: int):
    from marionette.nodes.types import BodySequence

    try:
        verts, faces, labels = _anny_mesh()
        mesh = "anny"
    except Exception:
        verts, faces, labels = _generated_mesh()
        mesh = "generated"
    focal = 5000 / 256 * max(width, height)
    size = verts[:, 1].max() - verts[:, 1].min()
    depth = focal * size / (0.85 * height)
    verts = verts - verts.mean(0)
    seq_v = []
    for t in range(frames):  # turn and sway a little so every frame differs
        a = 0.4 * np.sin(t / 5)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        seq_v.append(verts @ R.T + [0.05 * np.sin(t / 3) * depth / 20, 0, depth])
    T = frames
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    seq = BodySequence(model=mesh, shape=np.zeros(0), body_pose=np.zeros((T, 0, 3)), global_orient=np.zeros((T, 3)),
                       transl=np.zeros((T, 3)), K=np.repeat(K[None], T, 0), width=width, height=height,
                       vertices=np.stack(seq_v).astype(np.float32), faces=faces.astype(np.int32),
                       part_labels=labels.astype(np.int64), keypoints2d=np.zeros((T, 134, 2)), fit_error=np.zeros(T))
    return seq, mesh


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="render_guidance's cpu_threads (default 1, as the library); 0 keeps torch's")
    parser.add_argument("--backend", choices=("all", "torch", "opengl"), default="all")
    args = parser.parse_args(argv)

    common.import_pack()
    import torch

    from marionette.nodes.render.maps import render_guidance

    cpu_threads = args.cpu_threads or None
    seq, mesh = _sequence(args.frames, args.width, args.height)
    runs = []
    if args.backend in ("all", "torch"):
        runs.append(("torch", "cpu"))
        if torch.cuda.is_available():
            runs.append(("torch", "cuda"))
    if args.backend in ("all", "opengl"):
        try:
            from marionette.nodes.render.gl import GLRenderer

            GLRenderer(args.width, args.height)
            runs.append(("opengl", "egl"))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            print(json.dumps({"name": "render_guidance", "skipped": "opengl", "reason": reason}))

    for backend, device in runs:
        dev = None if backend == "opengl" else torch.device(device)
        # Warm-up: EGL context, CUDA kernels, allocator.
        render_guidance(seq, backend=backend, device=dev, cpu_threads=cpu_threads)
        times, cpu = [], []
        for _ in range(args.repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            c0, t0 = time.process_time(), time.perf_counter()
            render_guidance(seq, backend=backend, device=dev, cpu_threads=cpu_threads)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / args.frames)
            cpu.append((time.process_time() - c0) / args.frames)
        settings = {"size": f"{args.width}x{args.height}", "frames": args.frames, "backend": backend,
                    "device": device, "cpu_threads": cpu_threads or torch.get_num_threads(), "mesh": mesh,
                    "vertices": int(seq.vertices.shape[1]), "faces": int(seq.faces.shape[0]),
                    "maps": "depth,normal,semantic,mask", "commit": common.commit()}
        print(json.dumps({"name": "render_guidance_seconds_per_frame", "value": round(statistics.median(times), 5),
                          "best": round(min(times), 5), "unit": "s/frame", "settings": settings}), flush=True)
        # CPU time of the whole process (all threads, llvmpipe's included): the work itself,
        # which stays meaningful on a machine shared with other jobs.
        print(json.dumps({"name": "render_guidance_cpu_seconds_per_frame", "value": round(statistics.median(cpu), 5),
                          "best": round(min(cpu), 5), "unit": "cpu-s/frame", "settings": settings}), flush=True)


if __name__ == "__main__":
    main()
