"""The real CoTracker3 code (facebookresearch/co-tracker, tested at 82e02e8) through our loader
and both tracking protocols, with random weights saved in the published checkpoint layout
(the real model's own state dict, about 100 MB each, written to a temporary folder).

Skipped unless ``MARIONETTE_COTRACKER_HUB`` points to a checkout. Slow on a CPU: the model
always works at 384x512, so each call takes tens of seconds.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.models_loader import files
from marionette.models_loader.cache import CACHE
from marionette.nodes.track import cotracker as ct

REAL = os.environ.get("MARIONETTE_COTRACKER_HUB", "")
IS_REAL = bool(REAL) and (Path(REAL) / "cotracker/models/core/cotracker/cotracker3_offline.py").is_file()

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not IS_REAL, reason="set MARIONETTE_COTRACKER_HUB to a facebookresearch/co-tracker checkout")]


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    """A models folder with random-weight checkpoints written from the real models' state dicts."""
    out = tmp_path_factory.mktemp("real_cotracker")
    (out / "cotracker").mkdir()
    for mode in ct.MODES:  # through our hub loader, so a fixture copy imported earlier is not reused
        predictor = ct._hub_load(Path(REAL), f"cotracker3_{mode}")
        origin = Path(sys.modules[type(predictor).__module__].__file__).resolve()
        assert Path(REAL).resolve() in origin.parents
        torch.save(predictor.model.state_dict(), out / "cotracker" / f"scaled_{mode}.pth")
    files.set_models_dir(out)
    yield out
    files.set_models_dir(None)
    CACHE.clear()


def _video(frames, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(frames, h, w, 3, generator=g)
    mask = torch.zeros(frames, h, w)
    mask[:, 16:48, 36:60] = 1.0
    return video, mask


LENIENT = dict(min_track_frames=1, min_visible_fraction=0.0, max_jump=100.0)  # random weights: keep every track


def test_real_checkpoints_load_strictly(real_models):
    for mode, cls in (("offline", "CoTrackerPredictor"), ("online", "CoTrackerOnlinePredictor")):
        predictor = ct.load_predictor(mode, hub_dir=REAL).on_device()
        assert type(predictor).__name__ == cls
        assert Path(REAL).resolve() in Path(sys.modules[type(predictor).__module__].__file__).resolve().parents
        sd = torch.load(real_models / "cotracker" / f"scaled_{mode}.pth", weights_only=True)
        assert set(sd) == set(predictor.model.state_dict())
        assert all(torch.equal(v, sd[k]) for k, v in predictor.model.state_dict().items())
    with pytest.raises(files.ModelFileInvalid, match="16-frame window"):
        ct.build_predictor(REAL, "offline", real_models / "cotracker" / "scaled_online.pth")


def test_real_offline_tracking_in_two_chunks(real_models):
    video, mask = _video(20)
    calls = []
    cfg = ct.TrackConfig(points=8, mask_dilation=4, chunk_frames=12, overlap_frames=3, **LENIENT)
    res = ct.track_background(video, mask, mode="offline", config=cfg, hub_dir=REAL,
                              progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    n = res.tracks.shape[1]
    assert res.tracks.shape == (20, n, 2) and n >= 8 and np.isfinite(res.tracks).all()
    assert res.visibility.dtype == bool and (res.width, res.height) == (96, 64)
    # the real predictor puts each point at its query on its query frame: our grid, off the person
    q = res.query_frames
    at_query = res.tracks[q, np.arange(n)]
    assert res.visibility[q, np.arange(n)].all()
    assert not ((at_query[:, 0] > 36 - 4) & (at_query[:, 0] < 60 + 4) & (at_query[:, 1] > 16 - 4)
                & (at_query[:, 1] < 48 + 4)).any()
    assert set(np.unique(q)) <= {0, 9}


def test_real_online_protocol(real_models):
    video, mask = _video(21)  # not a multiple of the 8-frame step: the last window is shorter
    calls = []
    cfg = ct.TrackConfig(points=8, mask_dilation=4, chunk_frames=21, overlap_frames=4, **LENIENT)
    res = ct.track_background(video, mask, mode="online", config=cfg, hub_dir=REAL,
                              progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]  # windows [0, 16) and [8, 21)
    n = res.tracks.shape[1]
    assert res.tracks.shape == (21, n, 2) and n >= 8 and np.isfinite(res.tracks).all()
    assert res.extras["tracker"] == "cotracker3_online" and (res.query_frames == 0).all()
    assert res.visibility[0].all() and res.visibility.dtype == bool
