"""Background point tracks with CoTracker3, outside the person's mask.

Model. The code is facebookresearch/co-tracker used through torch.hub from a local copy, the way
users have it (``files.find_hub_repo``: an explicit folder or ``MARIONETTE_COTRACKER_HUB``, a clone
in ``models/cotracker/co-tracker``, or torch.hub's cache); ``torch.hub.load(dir, "cotracker3_offline"
| "cotracker3_online", source="local", pretrained=False)`` builds the predictor, and the published
checkpoint (``models/cotracker/scaled_{offline,online}.pth`` or torch.hub's ``checkpoints``) is read
safely, checked key by key and shape by shape, and loaded strictly into ``predictor.model``.
Nothing is ever downloaded. Loaded predictors live in the shared cache.

Tracking. Query points sit on a regular grid outside the dilated person mask. The video is
tracked in chunks of ``chunk_frames`` (neighbours share ``overlap_frames``) so memory stays
bounded: each chunk is one call of the offline predictor, or the online predictor's protocol
(``is_first_step`` with the queries, then windows of ``2 * step`` frames moving by ``step``).
A track continues into the next chunk by being queried again at its last visible position in
the overlap; a track that enters the dilated mask or leaves the frame ends there, one with no
visible frame in the overlap ends as lost, and new grid points replace them at the next chunk.
Positions are computed at a reduced size (``track_long_side``) and scaled back (pixel centres at
integers). Finally unreliable tracks are dropped: too few visible frames, too little of their
life visible, a jump (a step far from the frame's median step), or pulled into the person (the
frame's median motion would have kept the point outside the mask where it entered it).

Output: ``PointTracks`` with ``visibility`` = the tracker's visibility, inside the frame and
outside the dilated mask; outside a track's life (``extras["first_frame"]`` ..
``extras["last_frame"]``) positions hold the first / last tracked place and are not visible.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...models_loader import cache, catalog, files
from ..types import PointTracks

MODES = ("offline", "online")
HUB = "cotracker"
_PACKAGE = "cotracker"  # the repository's Python package, imported by its hubconf.py

ProgressFn = Callable[..., None]

# why a track ended (codes kept in extras["end_reason"])
ALIVE, LOST, LEFT, MASK = 0, 1, 2, 3
END_REASONS = ("video_end", "lost", "left_frame", "entered_mask")


@dataclass
class TrackConfig:
    """How background points are seeded, tracked and kept.

    Args:
        points: live tracks to keep; each chunk tops the live ones up with new grid points.
        mask_dilation: pixels (in the video's size) the person mask grows by; no point is seeded
            or kept there.
        chunk_frames: frames per tracker call (offline) or per re-seeding chunk (online); bounds memory.
        overlap_frames: frames shared by neighbouring chunks (1 .. chunk_frames // 2).
        track_long_side: frames are resized to this long side for tracking (0, or a larger value
            than the video's: as they are); tracks are scaled back.
        border: pixels at tracking size kept free of new points along the edges.
        min_track_frames: tracks visible on fewer frames are dropped (capped at the video length).
        min_visible_fraction: tracks visible on less of their life are dropped.
        max_jump: a step differing from the frame's median step by more than this fraction of the
            long side is a jump; the track is dropped.
    """

    points: int = 256
    mask_dilation: int = 16
    chunk_frames: int = 60
    overlap_frames: int = 4
    track_long_side: int = 512
    border: int = 4
    min_track_frames: int = 8
    min_visible_fraction: float = 0.5
    max_jump: float = 0.05

    def check(self) -> None:
        if self.points < 1:
            raise ValueError(f"points must be at least 1, got {self.points}")
        if self.chunk_frames < 2:
            raise ValueError(f"chunk_frames must be at least 2, got {self.chunk_frames}")
        if not 1 <= self.overlap_frames <= self.chunk_frames // 2:
            raise ValueError(f"overlap_frames must be between 1 and chunk_frames // 2 = {self.chunk_frames // 2}, "
                             f"got {self.overlap_frames}")
        if self.mask_dilation < 0 or self.track_long_side < 0 or self.border < 0:
            raise ValueError("mask_dilation, track_long_side and border cannot be negative")


# ------------------------------------------------------------------------------ loading

def _forget_other_copies(repo_dir: Path) -> None:
    """Drop an already imported ``cotracker`` package from another folder (a pip install, another
    clone), so ``repo_dir``'s hubconf imports its own code."""
    root = repo_dir.resolve()
    for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
        origin = getattr(sys.modules[name], "__file__", None)
        if origin is None or root not in Path(origin).resolve().parents:
            del sys.modules[name]


def _hub_load(repo_dir: Path, entry_point: str):
    """``torch.hub.load`` from the local copy, never downloading (``pretrained=False``), keeping
    the global random state (the repository's model modules call ``torch.manual_seed(0)`` on import)."""
    repo = catalog.HUB_REPOS[HUB]
    _forget_other_copies(repo_dir)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            return torch.hub.load(str(repo_dir), entry_point, source="local", pretrained=False)
    except ModuleNotFoundError as exc:
        raise files.ModelFileInvalid(
            f"The {repo.title} in {repo_dir} needs the Python package '{exc.name}', which is not installed.\n"
            f"Fix: pip install {exc.name} into ComfyUI's Python environment.") from exc
    except (RuntimeError, AttributeError) as exc:
        if entry_point in str(exc):
            raise files.ModelFileInvalid(
                f"The {repo.title} in {repo_dir} has no '{entry_point}' entry point in its hubconf.py (a clone from "
                f"before CoTracker3?).\nFix: update it (git pull) or clone {repo.url} again.") from exc
        raise files.ModelFileInvalid(f"The {repo.title} in {repo_dir} could not be loaded ({type(exc).__name__}: "
                                     f"{exc}).\nFix: clone {repo.url} again.") from exc
    except (ImportError, SyntaxError) as exc:
        raise files.ModelFileInvalid(f"The {repo.title} in {repo_dir} could not be imported ({type(exc).__name__}: "
                                     f"{exc}).\nFix: clone {repo.url} again.") from exc


def _check_window(sd: dict, expected: dict, path: Path, entry: catalog.ModelFile, mode: str) -> None:
    """Name the common mix-up (the other mode's checkpoint) before the generic layout check."""
    found, wanted = sd.get("time_emb"), expected.get("time_emb")
    if found is None or wanted is None or found.ndim < 2 or len(wanted) < 2 or found.shape[1] == wanted[1]:
        return
    other = MODES[1 - MODES.index(mode)]
    raise files.invalid_error(
        path, entry, f"it holds a tracker with a {found.shape[1]}-frame window, not the {wanted[1]}-frame window of "
        f"the {mode} model (the {other} checkpoint?); {mode} tracking needs {entry.names[0]}")


def build_predictor(repo_dir: str | Path, mode: str, checkpoint: str | Path):
    """The hub predictor for ``mode`` with the checkpoint's weights (uncached, on the CPU)."""
    if mode not in MODES:
        raise ValueError(f"CoTracker mode must be one of {MODES}, got '{mode}'")
    repo_dir, checkpoint = Path(repo_dir), Path(checkpoint)
    entry = catalog.model(f"cotracker3_{mode}")
    entry_point = f"cotracker3_{mode}"
    predictor = _hub_load(repo_dir, entry_point)
    model = getattr(predictor, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise files.ModelFileInvalid(f"{repo_dir}/hubconf.py's {entry_point} returned a {type(predictor).__name__} "
                                     f"without a .model; is this facebookresearch/co-tracker?")
    sd = files.load_state_dict(checkpoint, entry)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_window(sd, expected, checkpoint, entry, mode)
    files.check_state_dict(sd, expected, checkpoint, entry)
    model.load_state_dict(sd, strict=True)
    return predictor.eval().requires_grad_(False)


def load_predictor(mode: str = "offline", hub_dir: str | Path | None = None, checkpoint: str | None = None,
                   device=None) -> cache.LoadedModel:
    """The predictor through the shared cache (loaded once per code folder, checkpoint and
    device). Call ``.on_device()`` on the result right before use."""
    if mode not in MODES:
        raise ValueError(f"CoTracker mode must be one of {MODES}, got '{mode}'")
    entry = catalog.model(f"cotracker3_{mode}")
    repo_dir = files.find_hub_repo(HUB, hub_dir)
    path = files.find(entry, checkpoint)
    hubconf = (repo_dir / "hubconf.py").stat()
    return cache.CACHE.torch_module(entry, path, lambda: build_predictor(repo_dir, mode, path), device=device,
                                    extra_key=(str(repo_dir.resolve()), hubconf.st_mtime_ns))


def check_models(mode: str = "offline", hub_dir: str | Path | None = None, checkpoint: str | None = None) -> None:
    """Raise ``ModelFileMissing`` (what to put where) unless the code and checkpoint are found."""
    files.find_hub_repo(HUB, hub_dir)
    files.find(catalog.model(f"cotracker3_{mode}"), checkpoint)


# ------------------------------------------------------------------------------ inputs

def check_inputs(frames, person_mask=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``frames`` as a ``[T, H, W, 3]`` tensor and the mask as ``[T or 1, H, W]`` (or ``None``);
    ``ValueError`` saying what is wrong otherwise."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"Track Background expects an IMAGE batch [frames, height, width, 3], got "
                         f"{type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"Track Background expects an IMAGE batch [frames, height, width, 3], got shape "
                         f"{list(frames.shape)}")
    t, h, w = frames.shape[:3]
    if h < 16 or w < 16:
        raise ValueError(f"Track Background needs frames of at least 16x16 pixels, got {w}x{h}")
    if person_mask is None:
        return frames, None
    mask = torch.from_numpy(person_mask) if isinstance(person_mask, np.ndarray) else person_mask
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 4 and mask.shape[-1] in (1, 3):  # an IMAGE used as a mask
        mask = mask[..., 0]
    if mask.ndim != 3 or mask.shape[0] not in (1, t):
        raise ValueError(f"the person mask must be [frames, height, width] with {t} frames (or one frame for all), "
                         f"got shape {list(mask.shape)}")
    mh, mw = mask.shape[1:]
    if abs(mw / mh - w / h) > 0.01 * (w / h):
        raise ValueError(f"the person mask is {mw}x{mh} but the frames are {w}x{h}: give a mask of the video's size")
    return frames, mask


def work_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The tracking size: the video's, shrunk to ``long_side`` when it is larger."""
    if not long_side or max(width, height) <= long_side:
        return width, height
    s = long_side / max(width, height)
    return max(16, round(width * s)), max(16, round(height * s))


def _work_frames(frames: torch.Tensor, start: int, end: int, size: tuple[int, int], device) -> torch.Tensor:
    """Frames ``[start, end)`` as ``[1, T, 3, h, w]`` float 0..255 (the predictors' input), resized
    a few frames at a time so a long chunk of large frames is never copied whole."""
    w, h = size
    out = []
    for a in range(start, end, 8):
        x = frames[a:min(a + 8, end)].to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.clamp(0, 1) * 255.0)
    return torch.cat(out)[None]


def _work_mask(mask: torch.Tensor | None, start: int, end: int, size: tuple[int, int], radius: int) -> np.ndarray:
    """Frames ``[start, end)`` of the person mask at tracking size, a pixel counting as person
    when any video pixel under it does, dilated by ``radius`` (a square) → bool ``[T, h, w]``."""
    w, h = size
    if mask is None:
        return np.zeros((end - start, h, w), bool)
    out = []
    for a in range(start, end, 8):
        b = min(a + 8, end)
        m = mask[a:b] if mask.shape[0] > 1 else mask[:1].expand(b - a, -1, -1)
        m = (m.detach().float() > 0.5).float()[:, None].cpu()
        if m.shape[-2:] != (h, w):
            m = F.adaptive_max_pool2d(m, (h, w))
        if radius > 0:
            m = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)
        out.append(m[:, 0].numpy() > 0.5)
    return np.concatenate(out)


def _to_video_px(xy: np.ndarray, size: tuple[int, int], video: tuple[int, int]) -> np.ndarray:
    """Tracking-size pixels → video pixels (pixel centres at integers, as the resize maps them)."""
    sx, sy = video[0] / size[0], video[1] / size[1]
    out = xy.copy()
    out[..., 0] = (xy[..., 0] + 0.5) * sx - 0.5
    out[..., 1] = (xy[..., 1] + 0.5) * sy - 0.5
    return out


# ------------------------------------------------------------------------------ query points

def grid_spacing(size: tuple[int, int], points: int, border: int) -> float:
    """Spacing of a regular grid holding ``points`` points inside the borders."""
    w, h = size
    return math.sqrt(max(w - 2 * border, 1) * max(h - 2 * border, 1) / max(points, 1))


def seed_points(free: np.ndarray, count: int, spacing: float, border: int = 4,
                occupied: np.ndarray | None = None) -> np.ndarray:
    """Up to ``count`` points ``[K, 2]`` (x, y) on a regular grid over ``free`` (bool ``[h, w]``,
    True where points may go), skipping grid cells that already hold an ``occupied`` point. The
    grid is refined (down to a third of ``spacing``) until enough cells are free; extra cells
    are thinned out evenly."""
    h, w = free.shape
    if count <= 0:
        return np.zeros((0, 2), np.float32)
    occupied = np.zeros((0, 2)) if occupied is None else np.asarray(occupied, np.float64).reshape(-1, 2)
    cand = np.zeros((0, 2))
    for step in spacing * np.array([1.0, 0.8, 0.64, 0.5, 0.4, 1 / 3]):
        step = max(step, 1.0)
        xs = _axis(w, border, step)
        ys = _axis(h, border, step)
        gx, gy = np.meshgrid(xs, ys)
        cand = np.stack([gx.ravel(), gy.ravel()], -1)
        ok = free[np.rint(cand[:, 1]).astype(int), np.rint(cand[:, 0]).astype(int)]
        if len(occupied):
            d = np.abs(cand[:, None, :] - occupied[None]).max(-1)  # Chebyshev: one point per cell
            ok &= d.min(1) >= step / 2
        cand = cand[ok]
        if len(cand) >= count:
            break
    if len(cand) > count:
        cand = cand[np.unique(np.rint(np.linspace(0, len(cand) - 1, count)).astype(int))]
    return cand.astype(np.float32)


def _axis(n: int, border: int, step: float) -> np.ndarray:
    lo, hi = border, n - 1 - border
    if hi < lo:
        return np.array([(n - 1) / 2])
    k = int((hi - lo) // step) + 1
    return lo + (hi - lo - (k - 1) * step) / 2 + step * np.arange(k)


# ------------------------------------------------------------------------------ running the predictor

def chunk_schedule(frames: int, chunk_frames: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: chunks of ``chunk_frames`` sharing ``overlap`` frames."""
    out, start = [], 0
    while True:
        end = min(start + chunk_frames, frames)
        out.append((start, end))
        if end >= frames:
            return out
        start = end - overlap


def online_windows(frames: int, step: int) -> int:
    """Predictor calls the online protocol makes on ``frames`` frames (windows of ``2 * step``)."""
    return 1 + max(0, math.ceil((frames - 2 * step) / step))


def _device_of(predictor):
    try:
        return next(predictor.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def run_offline(predictor, video: torch.Tensor, queries: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One call of the offline predictor → tracks ``[T, N, 2]``, visibility ``[T, N]`` (numpy)."""
    with torch.no_grad():
        tracks, vis = predictor(video, queries=queries)
    return tracks[0].float().cpu().numpy(), vis[0].cpu().numpy().astype(bool)


def run_online(predictor, video: torch.Tensor, queries: torch.Tensor, after_window: Callable[[], None] = lambda: None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The online predictor's protocol: register the queries (``is_first_step``), then windows of
    ``2 * step`` frames starting every ``step`` frames until the last one reaches the end; the
    last call returns every frame's tracks."""
    step = int(predictor.step)
    t = video.shape[1]
    with torch.no_grad():
        predictor(video[:, :2 * step], is_first_step=True, queries=queries)
        ind = 0
        while True:
            tracks, vis = predictor(video[:, ind:ind + 2 * step])
            after_window()
            if ind + 2 * step >= t:
                break
            ind += step
    return tracks[0, :t].float().cpu().numpy(), vis[0, :t].cpu().numpy().astype(bool)


# ------------------------------------------------------------------------------ tracking

class _Tracks:
    """Tracks at tracking size, grown as points are added."""

    def __init__(self, frames: int, capacity: int):
        self.n = 0
        self.pos = np.zeros((frames, capacity, 2), np.float32)
        self.vis = np.zeros((frames, capacity), bool)
        self.born = np.zeros(capacity, np.int64)
        self.last = np.zeros(capacity, np.int64)
        self.reason = np.zeros(capacity, np.int8)
        self.dragged = np.zeros(capacity, bool)

    def add(self, count: int, frame: int) -> np.ndarray:
        if self.n + count > len(self.born):
            grow = max(self.n + count, 2 * len(self.born)) - len(self.born)
            self.pos = np.concatenate([self.pos, np.zeros((self.pos.shape[0], grow, 2), np.float32)], 1)
            self.vis = np.concatenate([self.vis, np.zeros((self.vis.shape[0], grow), bool)], 1)
            for name in ("born", "last", "reason", "dragged"):
                a = getattr(self, name)
                setattr(self, name, np.concatenate([a, np.zeros(grow, a.dtype)]))
        ids = np.arange(self.n, self.n + count)
        self.born[ids] = frame
        self.last[ids] = frame
        self.n += count
        return ids


def track_points(predictor, frames, person_mask=None, config: TrackConfig | None = None, mode: str = "offline",
                 progress: ProgressFn | None = None) -> PointTracks:
    """Background tracks of ``frames`` (IMAGE ``[T, H, W, 3]`` 0..1) outside ``person_mask``
    (MASK ``[T or 1, H, W]``, 1 = person, or ``None``) with a loaded hub ``predictor`` in
    ``mode`` (``offline`` / ``online``). ``progress(done, total)`` is called after every
    predictor call; an exception it raises stops the work."""
    config = config or TrackConfig()
    config.check()
    if mode not in MODES:
        raise ValueError(f"CoTracker mode must be one of {MODES}, got '{mode}'")
    frames, mask = check_inputs(frames, person_mask)
    t_len, height, width = frames.shape[:3]
    size = work_size(width, height, config.track_long_side)
    radius = math.ceil(config.mask_dilation * size[0] / width)
    spacing = grid_spacing(size, config.points, config.border)
    device = _device_of(predictor)
    chunks = chunk_schedule(t_len, config.chunk_frames, config.overlap_frames)
    step = int(getattr(predictor, "step", 0)) if mode == "online" else 0
    if mode == "online" and step < 1:
        raise ValueError(f"online tracking needs CoTracker's online predictor (with .step), got "
                         f"{type(predictor).__name__}")
    units = [online_windows(e - s, step) if mode == "online" else 1 for s, e in chunks]
    total, done = sum(units), 0
    store = _Tracks(t_len, 2 * config.points)
    alive = np.zeros(0, np.int64)
    prev_end = 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for chunk, (start, end) in enumerate(chunks):
        dilated = _work_mask(mask, start, end, size, radius)
        # tracks continue from their last visible frame in the overlap; the others are lost
        cont, cont_q = [], []
        for i in alive:
            seen = np.flatnonzero(store.vis[start:prev_end, i])
            if len(seen):
                cont.append(i)
                cont_q.append((seen[-1], *store.pos[start + seen[-1], i]))
            else:
                store.reason[i] = LOST
        cont = np.asarray(cont, np.int64)
        new_xy = seed_points(~dilated[0], config.points - len(cont), spacing, config.border,
                             store.pos[start, cont] if len(cont) else None)
        new = store.add(len(new_xy), start)
        q = np.concatenate([np.asarray(cont_q, np.float32).reshape(-1, 3),
                            np.concatenate([np.zeros((len(new), 1), np.float32), new_xy], 1)])
        ids = np.concatenate([cont, new])
        if len(ids) == 0:  # the person covers every free place: nothing to track in this chunk
            alive, prev_end = ids, end
            for _ in range(units[chunk]):
                tick()
            continue
        video = _work_frames(frames, start, end, size, device)
        queries = torch.from_numpy(q)[None].to(device)
        if end - start == 1:  # a single frame: nothing moves
            tr, vi = q[None, :, 1:].copy(), np.ones((1, len(q)), bool)
            tick()
        elif mode == "offline":
            tr, vi = run_offline(predictor, video, queries)
            tick()
        else:
            tr, vi = run_online(predictor, video, queries, tick)
        del video
        # each point is where it was queried, and seen there (the offline predictor does this too)
        tr[q[:, 0].astype(int), np.arange(len(q))] = q[:, 1:]
        vi[q[:, 0].astype(int), np.arange(len(q))] = True
        alive = _write_chunk(store, ids, q[:, 0].astype(int), len(cont), tr, vi, dilated, start, end)
        prev_end = end

    return _finish(store, config, size, (width, height), mode)


def _write_chunk(store: _Tracks, ids, q_t, continuing: int, tr, vi, dilated, start, end) -> np.ndarray:
    """Store one chunk's tracks (``ids``, the first ``continuing`` of them carried over from the
    previous chunk and queried at frame ``q_t``), end tracks that leave the frame or enter the
    dilated mask (noting whether the median motion would have kept them out), and return the ids
    still alive at the chunk's end."""
    t_len = end - start
    # a carried-over track keeps its earlier frames up to its query frame; a new one starts there
    write_from = q_t + (np.arange(len(ids)) < continuing)
    h, w = dilated.shape[1:]
    x, y = tr[..., 0], tr[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    xi = np.clip(np.rint(x), 0, w - 1).astype(int)
    yi = np.clip(np.rint(y), 0, h - 1).astype(int)
    in_mask = dilated[np.arange(t_len)[:, None], yi, xi]
    after = np.arange(t_len)[:, None] > q_t[None, :]
    bad = after & (~inside | in_mask)
    med = _median_steps(tr, vi & ~bad & (after | (np.arange(t_len)[:, None] == q_t[None, :])))
    still = []
    for k, i in enumerate(ids):
        hits = np.flatnonzero(bad[:, k])
        stop = hits[0] if len(hits) else t_len
        local = slice(write_from[k], stop)
        store.pos[start + local.start:start + stop, i] = tr[local, k]
        store.vis[start + local.start:start + stop, i] = vi[local, k] & ~bad[local, k]
        store.vis[start + stop:end, i] = False
        if len(hits):
            store.last[i] = start + stop - 1
            store.reason[i] = LEFT if not inside[stop, k] else MASK
            if store.reason[i] == MASK:
                px, py = tr[stop - 1, k] + med[stop]
                store.dragged[i] = (0 <= px <= w - 1 and 0 <= py <= h - 1
                                    and not dilated[stop, int(round(py)), int(round(px))])
        else:
            store.last[i] = end - 1
            still.append(i)
    return np.asarray(still, np.int64)


def _median_steps(tr: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Per frame ``[T, 2]``: the median step from the previous frame of tracks visible in both
    (0 where none is, and for the first frame)."""
    out = np.zeros((tr.shape[0], 2), np.float32)
    for t in range(1, tr.shape[0]):
        both = vis[t] & vis[t - 1]
        if both.any():
            out[t] = np.median(tr[t, both] - tr[t - 1, both], axis=0)
    return out


def _finish(store: _Tracks, config: TrackConfig, size, video_size, mode) -> PointTracks:
    """Trim each track to its visible life, drop unreliable ones, scale to video pixels."""
    n, t_len = store.n, store.pos.shape[0]
    pos, vis = store.pos[:, :n].copy(), store.vis[:, :n].copy()
    frame = np.arange(t_len)[:, None]
    life = (frame >= store.born[None, :n]) & (frame <= store.last[None, :n])
    vis &= life
    seen = vis.any(0)
    last = np.where(seen, t_len - 1 - np.argmax(vis[::-1], 0), store.born[:n])  # last visible frame
    life &= frame <= last[None]
    n_vis = vis.sum(0)
    n_life = life.sum(0)

    med = _median_steps(pos, vis)
    steps = np.zeros_like(pos)
    steps[1:] = pos[1:] - pos[:-1]
    both = np.zeros_like(vis)
    both[1:] = vis[1:] & vis[:-1]
    dev = np.linalg.norm(steps - med[:, None], axis=-1)
    jump = (both & (dev > config.max_jump * max(size))).any(0)

    short = n_vis < min(config.min_track_frames, t_len)
    low = n_vis < config.min_visible_fraction * np.maximum(n_life, 1)
    dragged = store.dragged[:n]
    reasons = {"short": short, "low_visibility": low & ~short, "jumping": jump & ~short & ~low,
               "pulled_into_mask": dragged & ~short & ~low & ~jump}
    keep = ~(short | low | jump | dragged)

    born, last = store.born[:n][keep], last[keep]
    pos, vis = pos[:, keep], vis[:, keep]
    frame = np.arange(t_len)[:, None]
    cols = np.arange(len(born))
    pos = np.where((frame < born[None])[..., None], pos[born, cols][None], pos)  # hold before the life ...
    pos = np.where((frame > last[None])[..., None], pos[last, cols][None], pos)  # ... and after it
    return PointTracks(
        tracks=_to_video_px(pos, size, video_size).astype(np.float32),
        visibility=vis,
        query_frames=born.astype(np.int64),
        width=int(video_size[0]), height=int(video_size[1]),
        extras={
            "tracker": f"cotracker3_{mode}",
            "tracking_size": tuple(int(s) for s in size),
            "points": config.points, "mask_dilation": config.mask_dilation,
            "chunk_frames": config.chunk_frames, "overlap_frames": config.overlap_frames,
            "first_frame": born.astype(np.int64), "last_frame": last.astype(np.int64),
            "end_reason": [END_REASONS[r] for r in store.reason[:n][keep]],
            "seeded": int(n), "dropped": {k: int(v.sum()) for k, v in reasons.items()},
        },
    )


def track_background(frames, person_mask=None, mode: str = "offline", config: TrackConfig | None = None,
                     hub_dir: str | Path | None = None, checkpoint: str | None = None,
                     progress: ProgressFn | None = None, device=None) -> PointTracks:
    """Background point tracks of a video with CoTracker3 (see the module's docstring).

    Args:
        frames: IMAGE ``[T, H, W, 3]`` float 0..1 (torch or numpy).
        person_mask: MASK ``[T, H, W]`` or one ``[H, W]`` for every frame, 1 = person; ``None``
            tracks the whole frame.
        mode: ``offline`` (scaled_offline.pth) or ``online`` (scaled_online.pth).
        config: seeding, chunking and filtering (``TrackConfig``).
        hub_dir: the co-tracker code folder (default: found by ``files.find_hub_repo``).
        checkpoint: a checkpoint file name or path instead of the published name.
        progress: ``progress(done, total)`` after every predictor call; may raise to cancel.
        device: where to run (default: ComfyUI's / CUDA when present / CPU).
    """
    config = config or TrackConfig()
    config.check()
    check_inputs(frames, person_mask)  # cheap checks before any loading
    predictor = load_predictor(mode, hub_dir, checkpoint, device).on_device(memory_estimate(config, mode))
    return track_points(predictor, frames, person_mask, config, mode=mode, progress=progress)


def memory_estimate(config: TrackConfig, mode: str) -> int:
    """Rough bytes one predictor call needs besides the weights (ComfyUI frees that much first):
    CoTracker3 works at 384x512 with 128-channel features at a quarter of that size (plus their
    pyramid) and a 4-level 7x7 by 7x7 correlation per point and frame, and keeps a few
    temporaries of each."""
    frames = config.chunk_frames if mode == "offline" else 16
    points = config.points + 36  # the predictor adds a 6x6 support grid
    features = frames * 128 * (384 // 4) * (512 // 4) * 4 * 4 // 3
    correlation = frames * points * 4 * 7 ** 4 * 4
    return 3 * (features + correlation)
