"""Peak memory of ``chain``-mode Animate (nodes/sampler/pipeline.py) streaming to a file, for a short
and a long video; one JSON object per line on stdout.

    python bench/long_video_memory.py                    # 100 and 1000 frames, 128x128, 2 steps
    python bench/long_video_memory.py --frames 100 400
    python bench/long_video.py --memory                  # the same, after the seam/colour figures

Each length runs in a fresh Python process (``--child``) on the tiny fixture release
(tests/fixtures/make_models.py), so one run's allocator caches cannot hide the next run's growth.
In the child: the models are loaded, a 2-clip warm-up run fills the allocator's pools, then

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (what torch
  allocated on the GPU during the run);
* CPU: the peak resident set during the run minus the resident set just before it. The kernel's
  peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` right before the run; where that
  is not allowed, the lifetime peak ``ru_maxrss`` is used instead (an upper bound that includes
  loading the models; the line says which). This counts everything the process touches: torch's
  CPU tensors, the allocator's cached blocks, Python objects, PIL buffers.

Allocator (``--allocator``): glibc's dynamic mmap threshold makes later large tensors come from
the heap, which fragments; over hundreds of clips a stock process's peak creeps up although
nothing is kept. The sampler hands freed pages back after every clip (``malloc_trim(0)``,
``clips.release_host_memory``), which stops most of the creep (a per-clip ``VmHWM`` trace over
1000 frames: 548 -> 634 MiB climbing steadily without it, 548 -> 562 -> 571 MiB with it). The
``default`` runs show what a stock process sees; the ``fixed-mmap`` runs set
``MALLOC_MMAP_THRESHOLD_=131072`` in the child's environment (a glibc tunable: large tensors
always get their own mapping and go back to the system when freed), which isolates what the
sampler itself holds. Timings are not comparable between the two (a shared CPU; fresh mappings
also cost page faults).

What is *not* counted: the inputs. Guidance comes from Encode Guidance's lazy source
(``LazyGuidance``) over an IMAGE batch that is a broadcast view of one frame (a real IMAGE
batch is held upstream by ComfyUI: its size is reported as ``input_image_mib``); the frame sink
writes 8-bit frames to a file and keeps nothing. Frames are generated and decoded for real.
Target: the 1000-frame peak within 10% of the 100-frame one (``chain_peak_memory_ratio``, one
per allocator setting).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py)

ROOT = Path(__file__).resolve().parents[1]


def _emit(name, value, unit, **settings):
    print(json.dumps({"name": name, "value": value, "unit": unit, **settings}), flush=True)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``); False where it cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def child(args) -> dict:
    """One measured run (in its own process); returns the figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    common.import_pack()
    from marionette.nodes.sampler import champ_files, pipeline
    from marionette.nodes.sampler.champ_files import ChampRelease
    from marionette.nodes.sampler.lazy_guidance import LazyGuidance
    from marionette.nodes.stitch import stitching as stitch
    from marionette.nodes.types import Stitching

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import champ_fixtures

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, frames = args.size, args.child_frames
    plan = stitch.validate(Stitching(mode="chain", clip_frames=args.clip_frames, overlap=args.overlap,
                                     blend="linear", color_match="reference"))
    with tempfile.TemporaryDirectory() as tmp:
        champ_fixtures.write_champ(tmp)
        release = ChampRelease.from_folder(Path(tmp) / "champ")
        get = pipeline.module_source({c: champ_files.load(release, c, device=device) for c in champ_files.COMPONENTS})
        g = torch.Generator().manual_seed(0)
        reference = torch.rand(size, size, 3, generator=g)
        one = {k: torch.rand(1, size, size, 3, generator=g) for k in ("depth", "dwpose")}

        def run(n: int, path: Path) -> int:
            maps = {k: v.expand(n, -1, -1, -1) for k, v in one.items()}  # a view: no memory per frame
            guidance = LazyGuidance(get, maps, size, size)
            stream = stitch.ClipStream(plan.overlap, blend=plan.blend,
                                       reference=stitch.ColorReference.from_image(reference))
            written = [0]
            with open(path, "wb") as f:
                def sink(x):
                    f.write((x.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes())
                    written[0] += x.shape[0]
                pipeline.animate(get, reference, guidance, size, size, steps=args.steps, guidance_scale=args.cfg,
                                 seed=42, stitching=plan, clip_stream=stream,
                                 frame_sink=sink, resize_to_reference=False)
            return written[0]

        run(2 * args.clip_frames - args.overlap, Path(tmp) / "warmup.raw")  # fills the allocator's pools
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss0 = _status_kib("VmRSS")
        measure = "VmHWM growth (peak reset before the run)" if _reset_peak() else "ru_maxrss growth (lifetime peak)"
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        written = run(frames, Path(tmp) / "video.raw")
        seconds = time.perf_counter() - start
        file_bytes = (Path(tmp) / "video.raw").stat().st_size
        if measure.startswith("VmHWM"):
            peak_kib = _status_kib("VmHWM") - rss0
        else:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - (rss0 or maxrss0)
        out = dict(frames=frames, written=written, file_mib=round(file_bytes / 2**20, 1), seconds=round(seconds, 1),
                   peak_mib=round(peak_kib / 1024, 1), measure=measure, rss_before_mib=round((rss0 or 0) / 1024, 1))
        if device.type == "cuda":
            torch.cuda.synchronize()
            out.update(peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                       measure="cuda.max_memory_allocated")
        return out


ALLOCATORS = {"default": {}, "fixed-mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def measure(frame_counts, size=128, steps=2, cfg=1.0, clip_frames=24, overlap=4, threads=1,
            allocators=("fixed-mmap", "default")) -> list[dict]:
    """Run each length in a fresh process per allocator setting and print one line per run plus
    the ratio of the last length to the first; returns the runs."""
    runs = []
    for allocator in allocators:
        runs += _measure(frame_counts, size, steps, cfg, clip_frames, overlap, threads, allocator)
    return runs


def _measure(frame_counts, size, steps, cfg, clip_frames, overlap, threads, allocator) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(config="tiny-fixture", mode="chain", width=size, height=size, steps=steps, cfg=cfg,
                    clip_frames=clip_frames, overlap=overlap, sink="8-bit raw file", guidance="lazy",
                    allocator=allocator, dtype="fp32", device=device, threads=threads, commit=common.commit())
    runs = []
    for frames in frame_counts:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--child-frames", str(frames), "--size",
               str(size), "--steps", str(steps), "--cfg", str(cfg), "--clip-frames", str(clip_frames), "--overlap",
               str(overlap), "--threads", str(threads)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run(cmd, capture_output=True, text=True, env={**env, **ALLOCATORS[allocator]})
        if done.returncode != 0:
            _emit("chain_peak_memory", None, "MiB", frames=frames, **settings,
                  skipped=f"the run failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        _emit("chain_peak_memory", run["peak_mib"], "MiB", frames=frames, measure=run["measure"],
              seconds=run["seconds"], frames_written=run["written"], file_mib=run["file_mib"],
              rss_before_mib=run["rss_before_mib"],
              input_image_mib=round(2 * frames * size * size * 3 * 4 / 2**20, 1), **settings)
    if len(runs) >= 2 and runs[0]["peak_mib"]:
        _emit("chain_peak_memory_ratio", round(runs[-1]["peak_mib"] / runs[0]["peak_mib"], 3), "ratio",
              frames=[r["frames"] for r in runs], target=1.1, **settings)
        # the whole process's peak (models, libraries and the run): what the machine must have
        first, last = (r["rss_before_mib"] + r["peak_mib"] for r in (runs[0], runs[-1]))
        _emit("chain_process_peak_ratio", round(last / first, 3), "ratio", frames=[r["frames"] for r in runs],
              process_peak_mib=[round(first, 1), round(last, 1)], target=1.1, **settings)
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--size", type=int, default=128, help="128: the smallest the tiny UNet takes")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=1.0, help="1: no classifier-free guidance (half the time)")
    parser.add_argument("--clip-frames", type=int, default=24)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--allocator", choices=[*ALLOCATORS, "both"], default="both",
                        help="glibc malloc settings of the measured process (see the docstring)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-frames", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    allocators = ("fixed-mmap", "default") if args.allocator == "both" else (args.allocator,)
    measure(args.frames, args.size, args.steps, args.cfg, args.clip_frames, args.overlap, args.threads, allocators)
    return 0


if __name__ == "__main__":
    sys.exit(main())
