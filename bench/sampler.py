"""Seconds per frame and peak memory of Marionette's Champ sampler (nodes/sampler/pipeline.py)
against the official Champ pipeline, one JSON object per line on stdout.

    python bench/sampler.py                          # tiny fixture, 48 frames at 128x128, 3 steps, 3 repeats
                                                     # (about 5 minutes on 2 CPU cores)
    python bench/sampler.py --frames 72 --repeats 5
    python bench/sampler.py --skip-official          # ours only (no official virtualenv at hand)

**Tiny configuration, both sides.** The fixture release of tests/fixtures/make_models.py (the
parity tests' files), 48 frames at 128x128 (three 24-frame windows overlapping by 4, the last
one wrapping around to the start), 3 DDIM steps, CFG 3.5, seed 42, fp32, one CPU thread
(``--threads``), the same inputs on both sides (random 8x8-pixel blocks as in the parity
goldens, a 160x128 reference that both resize). "Ours" is ``encode_guidance`` + ``animate``
as the Animate node calls them; "official" is ``MultiGuidance2LongVideoPipeline`` of
fudan-generative-vision/champ 02e5533 built the way tests/golden/make_champ_goldens.py builds it,
run by the golden virtualenv's python (``--official-python`` / ``$CHAMP_GOLDEN_PYTHON``,
``--champ-code`` / ``$CHAMP_OFFICIAL_CODE``; that script's docstring says how to build them;
without them the official side is reported as skipped). Both cover the same work: guidance encoding, CLIP/VAE
encoding of the reference, the reference UNet, all steps and windows, VAE decoding. The final
latents of both sides are compared (``latents_max_abs_diff``) to show they computed the same
video.

**How it is measured** (bench/sampler_run.py does one run per fresh process, after loading the
models and a 2-frame warm-up): wall time and process CPU time of the run; peak memory as the
growth of the resident set during the run (kernel ``VmHWM`` reset at the start, minus the
resident set at the start). Timing runs use the default environment; memory runs are separate
processes with glibc's ``MALLOC_MMAP_THRESHOLD_=131072`` fixed, so freed tensors leave the
resident set and it follows live memory (otherwise glibc keeps freed blocks depending on what
ran before). Each repeat runs both sides one after the other, alternating which goes first;
figures are medians over repeats, with every repeat's value listed. On a shared machine wall
time is noisy: compare the CPU-time ratio too.

**Full size (CUDA only).** Our pipeline (and the official one when its virtualenv is there)
with random weights at Champ's real size: SD1.5 UNets, the official guidance encoders, SD's VAE,
a ViT-L/14 CLIP tower, 512x512, fp16, 20 steps, 24 and 72 frames: seconds per frame and peak
VRAM (``torch.cuda.max_memory_allocated``: with the models, and its growth during the run).
Without CUDA these print one ``skipped`` line each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402  (bench/common.py)
import sampler_run  # noqa: E402  (bench/sampler_run.py)

TARGET_TIME, TARGET_MEMORY = 0.8, 0.8
MMAP_THRESHOLD = "131072"


def _emit(name, value, unit, **fields):
    print(json.dumps({"name": name, "value": value, "unit": unit, **fields}), flush=True)


def _run(python: str, side: str, extra: list[str], env_extra: dict, timeout: int = 3600) -> dict:
    env = dict(os.environ, **env_extra)
    cmd = [python, str(HERE / "sampler_run.py"), side, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} run failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _thread_env(threads: int) -> dict:
    if not threads:
        return {}
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _median(values):
    return statistics.median(values) if values else None


def compare_tiny(args, settings) -> None:
    official_ok = not args.skip_official and bool(args.official_python) and Path(args.official_python).is_file() \
        and (Path(args.champ_code) / "pipelines" / "pipeline_aggregation.py").is_file()
    if not args.skip_official and not official_ok:
        _emit("official_sampler_seconds_per_frame", None, "s/frame", skipped=(
            f"no official environment (python '{args.official_python}', code '{args.champ_code}'): build them as "
            "tests/golden/make_champ_goldens.py's docstring says and pass --official-python/--champ-code or set "
            "CHAMP_GOLDEN_PYTHON/CHAMP_OFFICIAL_CODE"), **settings)
    sides = {"marionette": (sys.executable, "ours")}
    if official_ok:
        sides["official"] = (args.official_python, "official")
    env = {**_thread_env(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        import champ_fixtures

        champ_fixtures.write_champ(tmp)
        reference, maps = sampler_run.random_inputs(args.frames, args.size)
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, reference=reference, **{f"guidance_{g}": m for g, m in maps.items()})
        common_args = ["--release", str(Path(tmp) / "champ"), "--inputs", str(inputs), "--steps", str(args.steps),
                       "--cfg", str(args.cfg), "--seed", str(args.seed), "--threads", str(args.threads),
                       "--champ-code", args.champ_code]
        if args.cpu:
            common_args.append("--cpu")
        timing = {k: [] for k in sides}
        memory = {k: [] for k in sides}
        names = list(sides)
        for r in range(args.repeats):
            order = list(names) if r % 2 == 0 else names[::-1]
            for name in order:
                python, side = sides[name]
                extra = common_args + (["--latents-out", str(Path(tmp) / f"{name}.npy")] if r == 0 else [])
                try:
                    timing[name].append(_run(python, side, extra, env))
                except RuntimeError as error:
                    if name == "marionette":
                        raise
                    _emit("official_sampler_seconds_per_frame", None, "s/frame",
                          skipped=f"the official pipeline failed: {error}"[:2000], **settings)
                    names.remove(name)
            for name in order[::-1] if r < args.memory_repeats else ():
                if name in names:
                    python, side = sides[name]
                    memory[name].append(_run(python, side, common_args,
                                             {**env, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}))

        summary = {}
        for name in names:
            wall = [t["wall_s"] / args.frames for t in timing[name]]
            cpu = [t["cpu_s"] / args.frames for t in timing[name]]
            mem = [m.get("peak_cuda_growth_mib", m["peak_rss_growth_mib"]) for m in memory[name]]
            summary[name] = {"wall": _median(wall), "cpu": _median(cpu), "memory": _median(mem)}
            side = dict(side=name, **settings)
            _emit("sampler_seconds_per_frame", round(_median(wall), 5), "s/frame", measure="wall time",
                  repeats=[round(v, 5) for v in wall], **side)
            _emit("sampler_cpu_seconds_per_frame", round(_median(cpu), 5), "s/frame",
                  measure="process CPU time (all threads)", repeats=[round(v, 5) for v in cpu], **side)
            if mem:
                measure = ("cuda.max_memory_allocated growth" if "peak_cuda_growth_mib" in memory[name][0] else
                           f"{memory[name][0]['memory_measure']}, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
                _emit("sampler_peak_memory_growth", round(_median(mem), 2), "MiB", measure=measure,
                      repeats=[round(v, 2) for v in mem], **side)
            _emit("sampler_peak_rss_growth_default_malloc", round(_median(
                [t["peak_rss_growth_mib"] for t in timing[name]]), 2), "MiB",
                measure="same as above in the timing runs (glibc default: depends on what it kept from the warm-up)",
                repeats=[round(t["peak_rss_growth_mib"], 2) for t in timing[name]], **side)
        if "official" in summary and summary["official"]["wall"] is not None:
            ours, off = summary["marionette"], summary["official"]
            for key, name, target in (("wall", "sampler_time_ratio", TARGET_TIME),
                                      ("cpu", "sampler_cpu_time_ratio", TARGET_TIME),
                                      ("memory", "sampler_peak_memory_ratio", TARGET_MEMORY)):
                if ours[key] is None or off[key] is None:
                    continue
                ratio = ours[key] / off[key]
                _emit(name, round(ratio, 3), "ours/official", target=f"<= {target}", met=ratio <= target, **settings)
            a, b = Path(tmp) / "marionette.npy", Path(tmp) / "official.npy"
            if a.is_file() and b.is_file():
                _emit("latents_max_abs_diff", float(np.abs(np.load(a) - np.load(b)).max()), "", note=(
                    "final latents, ours vs official, same inputs (parity tolerance 1e-3)"),
                    **settings)


def full_size(args, settings) -> None:
    import torch

    base = dict(settings, config="full-size random weights", width=sampler_run.FULL_SIZE,
                height=sampler_run.FULL_SIZE, steps=args.full_steps, dtype="fp16")
    if not torch.cuda.is_available() or args.cpu:
        for frames in args.full_frames:
            _emit("sampler_full_size_seconds_per_frame", None, "s/frame", skipped="no CUDA device: the full-size "
                  "random-weight runs (SD1.5 widths, 512x512, fp16) only run on a GPU", **dict(base, frames=frames))
        return
    base["device"] = torch.cuda.get_device_name(0)
    sides = {"marionette": (sys.executable, "ours-full")}
    if not args.skip_official and args.official_python and Path(args.official_python).is_file():
        sides["official"] = (args.official_python, "official-full")
    for frames in args.full_frames:
        results = {}
        for name, (python, side) in sides.items():
            extra = ["--frames", str(frames), "--steps", str(args.full_steps), "--cfg", str(args.cfg),
                     "--seed", str(args.seed), "--champ-code", args.champ_code]
            try:
                results[name] = r = _run(python, side, extra, {"HF_HUB_OFFLINE": "1"})
            except RuntimeError as error:
                _emit("sampler_full_size_seconds_per_frame", None, "s/frame", side=name,
                      skipped=str(error).splitlines()[0], **dict(base, frames=frames))
                continue
            fields = dict(side=name, **dict(base, frames=frames))
            _emit("sampler_full_size_seconds_per_frame", round(r["wall_s"] / frames, 4), "s/frame", **fields)
            _emit("sampler_full_size_peak_vram", round(r["peak_cuda_mib"], 1), "MiB",
                  measure="cuda.max_memory_allocated (models included)", **fields)
            _emit("sampler_full_size_peak_vram_growth", round(r["peak_cuda_growth_mib"], 1), "MiB",
                  measure="cuda.max_memory_allocated - allocated at the start (the run's own memory)", **fields)
        if len(results) == 2:
            ours, off = results["marionette"], results["official"]
            _emit("sampler_full_size_time_ratio", round(ours["wall_s"] / off["wall_s"], 3), "ours/official",
                  target=f"<= {TARGET_TIME}", **dict(base, frames=frames))
            _emit("sampler_full_size_vram_ratio", round(ours["peak_cuda_mib"] / off["peak_cuda_mib"], 3),
                  "ours/official", target=f"<= {TARGET_MEMORY}", **dict(base, frames=frames))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48, help="tiny runs: frames (48: three windows, one wrapping)")
    parser.add_argument("--size", type=int, default=128, help="tiny runs: image side (128: the parity tests' size)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per side")
    parser.add_argument("--memory-repeats", type=int, default=3, help="memory runs per side")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (0: torch's default)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is there")
    parser.add_argument("--official-python", default=os.environ.get("CHAMP_GOLDEN_PYTHON", ""),
                        help="python of the official-code virtualenv (tests/golden/make_champ_goldens.py; "
                             "default: $CHAMP_GOLDEN_PYTHON)")
    parser.add_argument("--champ-code", default=os.environ.get("CHAMP_OFFICIAL_CODE", ""),
                        help="the official champ code at 02e5533 (default: $CHAMP_OFFICIAL_CODE)")
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--full-frames", type=int, nargs="+", default=[24, 72])
    parser.add_argument("--full-steps", type=int, default=sampler_run.FULL_STEPS)
    args = parser.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    settings = dict(config="tiny-fixture", frames=args.frames, width=args.size, height=args.size, steps=args.steps,
                    cfg=args.cfg, seed=args.seed, dtype="fp32", device=device, threads=args.threads,
                    torch=torch.__version__, commit=common.commit())
    if not args.skip_tiny:
        compare_tiny(args, settings)
    if not args.skip_full:
        full_size(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
