"""Seconds per frame and peak memory of Marionette's Champ sampler (nodes/sampler/pipeline.py),
one JSON object per line on stdout.

    python bench/sampler.py                       # tiny fixture release, 30 frames at 128x128, 3 steps
    python bench/sampler.py --frames 48 --steps 5

The tiny configuration is the fixture release of tests/fixtures/make_models.py (written to a
temporary folder) at the parity tests' settings: two windows, the second wrapping around. Peak
memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the growth of the process's peak
resident set (``ru_maxrss``) during the run, an upper bound that includes allocator caching.

Not done yet: the official pipeline on the same configuration (it needs the golden virtualenv of
tests/golden/make_champ_goldens.py) and full-size random-weight runs (only meaningful on CUDA);
both are reported as skipped lines.
"""
from __future__ import annotations

import argparse
import json
import resource
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.import_pack()
    from marionette.nodes.sampler import champ_files, pipeline
    from marionette.nodes.sampler.champ_files import ChampRelease

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import champ_fixtures

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = dict(config="tiny-fixture", frames=args.frames, width=args.size, height=args.size, steps=args.steps,
                    cfg=args.cfg, dtype="fp32", device=str(device), threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        champ_fixtures.write_champ(tmp)
        release = ChampRelease.from_folder(Path(tmp) / "champ")
        get = pipeline.module_source({c: champ_files.load(release, c, device=device) for c in champ_files.COMPONENTS})
        g = torch.Generator().manual_seed(0)
        reference = torch.rand(args.size, args.size, 3, generator=g)
        maps = {k: torch.rand(args.frames, args.size, args.size, 3, generator=g) for k in pipeline.GUIDANCE_TYPES}
        pipeline.animate(get, reference, pipeline.encode_guidance(get, {"depth": maps["depth"][:2]}, args.size,
                                                                  args.size), args.size, args.size, steps=1)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        features = pipeline.encode_guidance(get, maps, args.size, args.size)
        pipeline.animate(get, reference, features, args.size, args.size, steps=args.steps, guidance_scale=args.cfg,
                         seed=42, resize_to_reference=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        _emit("marionette_sampler_seconds_per_frame", round(seconds / args.frames, 5), "s/frame", **settings)
        if device.type == "cuda":
            _emit("marionette_sampler_peak_memory", round(torch.cuda.max_memory_allocated() / 2**20, 1), "MiB",
                  measure="cuda.max_memory_allocated", **settings)
        else:
            grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            _emit("marionette_sampler_peak_memory", round(grow, 1), "MiB", measure="ru_maxrss growth", **settings)
    _emit("official_sampler_seconds_per_frame", None, "s/frame", skipped="not implemented: run the official pipeline "
          "from the golden venv (tests/golden/make_champ_goldens.py)", **settings)
    if device.type != "cuda":
        _emit("marionette_sampler_full_size", None, "s/frame", skipped="no CUDA: full-size random-weight runs only on "
              "a GPU", **settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
