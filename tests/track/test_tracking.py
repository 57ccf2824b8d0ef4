"""Background tracking (nodes/track/cotracker.py) with the fixture CoTracker hub copy: query
points never on the (dilated) person, tracks that follow a known pan, chunk joins, the online
protocol, progress and cancel, and dropping unreliable tracks."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.nodes.track import cotracker as ct
from marionette.nodes.types import PointTracks

sys.path.insert(0, str(Path(__file__).parent))
from panning_video import panning_video  # noqa: E402

TOL_PX = 0.5  # the fixture tracker is exact to a few tenths of a pixel on the smooth texture


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture tracker's many small ops are slower with threads on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def hub(models_dir, monkeypatch):
    """The fixture models folder, with no real checkout taking precedence."""
    monkeypatch.delenv("MARIONETTE_COTRACKER_HUB", raising=False)
    return models_dir


@pytest.fixture(scope="module")
def video():
    return panning_video(frames=30, height=96, width=128, velocity=(-1.0, 0.5), person_speed=2.5)


def _predictor(mode):
    return ct.load_predictor(mode).on_device()


def _errors(res: PointTracks, vid) -> np.ndarray:
    """Distance ``[T, N]`` of every position from where the pan takes the track's query point."""
    n = np.arange(res.tracks.shape[1])
    start = res.tracks[res.query_frames, n]
    return np.linalg.norm(res.tracks - vid.expected(start, res.query_frames), axis=-1)


def _clear_of_person(res: PointTracks, vid, dilation: float) -> np.ndarray:
    """``[T, N]`` True where a position is farther from the person disc than its dilated edge."""
    d = np.linalg.norm(res.tracks - vid.centres[:, None, :], axis=-1)
    return d > vid.radius + dilation - 1.0


# ------------------------------------------------------------------------------ query points

def test_seed_points_stay_off_the_dilated_mask_and_fill_the_frame(video):
    size = (128, 96)
    dilated = ct._work_mask(video.mask, 0, 1, size, radius=6)[0]
    yy, xx = np.mgrid[:96, :128]
    disc = (xx - video.centres[0, 0]) ** 2 + (yy - video.centres[0, 1]) ** 2 <= video.radius ** 2
    assert dilated[disc].all() and dilated.sum() > disc.sum() * 1.5  # the mask grew
    spacing = ct.grid_spacing(size, 40, border=4)
    pts = ct.seed_points(~dilated, 40, spacing, border=4)
    assert len(pts) == 40  # the grid is refined until enough free places are found
    assert not dilated[np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 0]).astype(int)].any()
    d = np.linalg.norm(pts - video.centres[0], axis=1)
    assert (d > video.radius + 6 - 1).all()
    assert (pts >= 4).all() and (pts[:, 0] <= 127 - 4).all() and (pts[:, 1] <= 95 - 4).all()
    gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e3
    assert gaps.min() > 0.5 * spacing  # a grid, not a clump

    # occupied cells are skipped: new points keep clear of points already tracked
    more = ct.seed_points(~dilated, 10, spacing, border=4, occupied=pts[:30])
    assert 0 < len(more) <= 10
    assert np.abs(more[:, None] - pts[None, :30]).max(-1).min() >= spacing / 2 - 1e-6


def test_no_free_place_gives_no_points():
    assert len(ct.seed_points(np.zeros((40, 50), bool), 10, 5.0)) == 0
    assert len(ct.seed_points(np.ones((40, 50), bool), 0, 5.0)) == 0


# ------------------------------------------------------------------------------ tracking

def test_offline_tracks_follow_the_pan_and_keep_off_the_person(hub, video):
    cfg = ct.TrackConfig(points=30, mask_dilation=6, chunk_frames=60)
    res = ct.track_points(_predictor("offline"), video.frames, video.mask, cfg)
    t, n = res.visibility.shape
    assert (t, res.width, res.height) == (30, 128, 96) and res.tracks.shape == (30, n, 2) and n >= 15
    assert res.tracks.dtype == np.float32 and res.visibility.dtype == bool and np.isfinite(res.tracks).all()
    err = _errors(res, video)
    assert err[res.visibility].max() < TOL_PX
    assert res.visibility.sum() > 0.4 * t * n  # most of the tracked frames are seen
    # a visible point is never on the dilated person, and every query sat outside it
    assert _clear_of_person(res, video, 6)[res.visibility].all()
    q = res.query_frames
    assert _clear_of_person(res, video, 6)[q, np.arange(n)].all()
    # outside its life a track holds its first / last place and is not visible
    first, last = res.extras["first_frame"], res.extras["last_frame"]
    for i in range(n):
        assert not res.visibility[:first[i], i].any() and not res.visibility[last[i] + 1:, i].any()
        assert np.allclose(res.tracks[last[i]:, i], res.tracks[last[i], i])
    assert set(res.extras["end_reason"]) <= set(ct.END_REASONS)
    assert "left_frame" in res.extras["end_reason"]  # the pan carries points out of the frame


def test_chunks_continue_tracks_across_joins(hub, video):
    one = ct.track_points(_predictor("offline"), video.frames, video.mask, ct.TrackConfig(points=30, mask_dilation=6))
    cfg = ct.TrackConfig(points=30, mask_dilation=6, chunk_frames=10, overlap_frames=3)
    assert ct.chunk_schedule(30, 10, 3) == [(0, 10), (7, 17), (14, 24), (21, 30)]
    res = ct.track_points(_predictor("offline"), video.frames, video.mask, cfg)
    # no jump where chunks meet: every step between visible frames is the pan's
    both = res.visibility[1:] & res.visibility[:-1]
    steps = np.diff(res.tracks, axis=0) - np.asarray(video.velocity)
    assert np.linalg.norm(steps, axis=-1)[both].max() < TOL_PX
    # re-querying at a tracked place carries its small error into the next chunk: it may add up
    err = _errors(res, video)[res.visibility]
    assert err.max() < 3 * TOL_PX and err.mean() < 0.2
    first, last = res.extras["first_frame"], res.extras["last_frame"]
    across = (first < 7) & (last >= 17)
    assert across.sum() >= 5  # tracks carried through two joins, still on their original point
    assert (res.query_frames[across] == first[across]).all()
    # new points are seeded at chunk starts to replace the ones that left
    assert set(np.unique(res.query_frames)) - {0} <= {7, 14, 21} and (res.query_frames > 0).any()
    # the tracks that start on frame 0 are the same as with one chunk
    a = {tuple(np.round(p, 3)): i for i, p in enumerate(one.tracks[0]) if one.query_frames[i] == 0}
    matched = 0
    for j in np.flatnonzero(res.query_frames == 0):
        i = a.get(tuple(np.round(res.tracks[0, j], 3)))
        if i is None:
            continue
        both = one.visibility[:, i] & res.visibility[:, j]
        assert np.abs(one.tracks[both, i] - res.tracks[both, j]).max() < 3 * TOL_PX
        matched += 1
    assert matched >= 10


class _Recorder:
    """Wraps a hub predictor and records how it is called."""

    def __init__(self, predictor):
        self.inner = predictor
        self.step = getattr(predictor, "step", None)
        self.calls = []

    def __call__(self, video, *args, **kwargs):
        self.calls.append((video.shape[1], dict(kwargs)))
        return self.inner(video, *args, **kwargs)


def test_online_mode_follows_the_pan_with_the_real_protocol(hub, video):
    rec = _Recorder(_predictor("online"))
    cfg = ct.TrackConfig(points=30, mask_dilation=6, chunk_frames=30)
    res = ct.track_points(rec, video.frames, video.mask, cfg, mode="online")
    assert rec.step == 8
    frames, first = rec.calls[0]
    assert first["is_first_step"] is True and first["queries"].shape[0] == 1 and first["queries"].shape[2] == 3
    windows = [f for f, kw in rec.calls[1:]]
    assert all(not kw.get("is_first_step") for _, kw in rec.calls[1:])
    # windows of 2 * step frames every step frames, the last one reaching frame 30
    assert windows == [16, 16, 14] and ct.online_windows(30, 8) == 3
    err = _errors(res, video)
    assert err[res.visibility].max() < TOL_PX
    assert res.tracks.shape[1] >= 15 and res.extras["tracker"] == "cotracker3_online"
    assert _clear_of_person(res, video, 6)[res.visibility].all()


def test_online_mode_in_chunks(hub, video):
    cfg = ct.TrackConfig(points=20, mask_dilation=6, chunk_frames=20, overlap_frames=4)
    calls = []
    res = ct.track_points(_predictor("online"), video.frames, video.mask, cfg, mode="online",
                          progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # chunks of 20 and 14 frames: 2 + 1 windows
    assert _errors(res, video)[res.visibility].max() < TOL_PX
    assert ((res.extras["first_frame"] < 16) & (res.extras["last_frame"] >= 20)).any()


def test_reduced_tracking_size_scales_back(hub):
    vid = panning_video(frames=12, height=192, width=256, velocity=(-2.0, 1.0), cell=12.0, person_radius=28.0,
                        person_speed=4.0)
    cfg = ct.TrackConfig(points=20, mask_dilation=12, track_long_side=128)
    res = ct.track_points(_predictor("offline"), vid.frames, vid.mask, cfg)
    assert res.extras["tracking_size"] == (128, 96) and (res.width, res.height) == (256, 192)
    assert _errors(res, vid)[res.visibility].max() < 2 * TOL_PX * 2  # half-size tracking: errors double
    assert (res.tracks[..., 0].max() > 128) and res.visibility.any()
    assert _clear_of_person(res, vid, 12)[res.visibility].all()


def test_progress_and_cancel(hub, video):
    calls = []
    cfg = ct.TrackConfig(points=10, chunk_frames=10, overlap_frames=2)
    ct.track_points(_predictor("offline"), video.frames, video.mask, cfg, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        ct.track_points(_predictor("offline"), video.frames, video.mask, cfg, progress=cancel)


def test_single_frame_and_no_mask(hub, video):
    res = ct.track_points(_predictor("offline"), video.frames[:1], None, ct.TrackConfig(points=12))
    assert res.tracks.shape == (1, 12, 2) and res.visibility.all() and (res.query_frames == 0).all()
    res = ct.track_points(_predictor("offline"), video.frames[:8].numpy(), video.mask[0].numpy(),
                          ct.TrackConfig(points=12, mask_dilation=6))
    assert len(res) == 8 and res.tracks.shape[1] > 0


def test_bad_inputs_say_what_is_wrong(video):
    with pytest.raises(ValueError, match="IMAGE batch"):
        ct.check_inputs(torch.zeros(4, 32, 32))
    with pytest.raises(ValueError, match="4 frames"):
        ct.check_inputs(torch.zeros(4, 32, 32, 3), torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="video's size"):
        ct.check_inputs(torch.zeros(4, 32, 32, 3), torch.zeros(4, 32, 64))
    with pytest.raises(ValueError, match="overlap_frames"):
        ct.TrackConfig(chunk_frames=10, overlap_frames=6).check()
    frames, mask = ct.check_inputs(torch.zeros(2, 32, 48, 3), torch.zeros(64, 96))
    assert mask.shape == (1, 64, 96)  # same aspect, another size: resized on use


# ------------------------------------------------------------------------------ dropping unreliable tracks

class _Scripted:
    """An offline predictor for a static scene with a disc moving right at 3 px/frame along
    y = 48 from x = 40. Every track stays on its query point, except the ones queried nearest
    these spots: ``jump`` leaps 40 px on frame 12, ``low`` is seen on every third frame,
    ``pulled`` goes to y = 48 and then runs into the disc from behind at 5 px/frame, ``short``
    is seen on its first 5 frames, ``covered`` stays put and the disc runs over it."""

    SPOTS = {"jump": (110, 15), "low": (110, 80), "pulled": (6, 48), "short": (100, 70), "covered": (90, 48)}

    def __init__(self):
        self.columns = {}

    def __call__(self, video, queries):
        t_len = video.shape[1]
        q = queries[0, :, 1:].numpy()
        tr = np.repeat(q[None], t_len, 0).astype(np.float32)
        vis = np.ones((t_len, len(q)), bool)
        t = np.arange(t_len, dtype=np.float32)
        free = list(range(len(q)))
        for name, spot in self.SPOTS.items():
            i = min(free, key=lambda k: np.hypot(*(q[k] - spot)))
            free.remove(i)
            self.columns[name] = i
        c = self.columns
        tr[12, c["jump"], 1] += 40
        vis[:, c["low"]] = np.arange(t_len) % 3 == 0
        x0, y0 = q[c["pulled"]]
        tr[:, c["pulled"]] = np.stack([x0 + 5 * t, y0 + (48 - y0) * np.minimum(t / 4, 1)], -1)
        vis[5:, c["short"]] = False
        return torch.from_numpy(tr)[None], torch.from_numpy(vis)[None]


def test_unreliable_tracks_are_dropped_and_real_occlusions_kept():
    t_len, h, w = 30, 96, 128
    yy, xx = np.mgrid[:h, :w]
    disc = np.stack([((xx - (40 + 3 * t)) ** 2 + (yy - 48) ** 2 <= 100) for t in range(t_len)])
    scripted = _Scripted()
    res = ct.track_points(scripted, torch.zeros(t_len, h, w, 3), torch.from_numpy(disc.astype(np.float32)),
                          ct.TrackConfig(points=20, mask_dilation=4))
    dropped = res.extras["dropped"]
    assert dropped["jumping"] == 1 and dropped["low_visibility"] == 1 and dropped["pulled_into_mask"] == 1
    assert dropped["short"] >= 1
    assert len(res.query_frames) + sum(dropped.values()) == res.extras["seeded"]
    # which tracks survived, by their start
    starts = [tuple(p) for p in np.round(res.tracks[0], 3)]
    queried = {name: tuple(np.round(scripted_q, 3)) for name, scripted_q in _starts(scripted, res, disc)}
    for gone in ("jump", "low", "pulled", "short"):
        assert queried[gone] not in starts, gone
    kept = starts.index(queried["covered"])  # covered by the person, not pulled: kept up to the frame before
    assert res.extras["end_reason"][kept] == "entered_mask"
    cut = res.extras["last_frame"][kept]
    assert res.visibility[:cut + 1, kept].all() and not res.visibility[cut + 1:, kept].any()
    x, y = np.rint(res.tracks[cut, kept]).astype(int)
    assert not disc[cut, y, x] and np.abs(np.argwhere(disc[cut + 1]) - (y, x)).max(1).min() <= 4  # the disc came


def _starts(scripted, res, disc):
    """(name, query point) of the scripted tracks, recomputed from the seeding the tracker did."""
    dilated = ct._work_mask(torch.from_numpy(disc.astype(np.float32)), 0, 1, (128, 96), 4)[0]
    q = ct.seed_points(~dilated, 20, ct.grid_spacing((128, 96), 20, 4), 4)
    return [(name, q[i]) for name, i in scripted.columns.items()]
