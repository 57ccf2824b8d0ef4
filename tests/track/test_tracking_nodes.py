"""Drawing point tracks (nodes/track/draw.py) and the tracking nodes run without a server."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.nodes.track import draw, tracking_node
from marionette.nodes.types import PointTracks

sys.path.insert(0, str(Path(__file__).parent))
from panning_video import panning_video  # noqa: E402


def _one_track(t=4, w=64, h=48):
    pos = np.zeros((t, 1, 2), np.float32)
    pos[:, 0, 0] = 10 + 8 * np.arange(t)  # moves right 8 px per frame
    pos[:, 0, 1] = 20
    vis = np.ones((t, 1), bool)
    vis[1] = False
    return PointTracks(tracks=pos, visibility=vis, query_frames=np.zeros(1, np.int64), width=w, height=h)


def test_points_and_trails_are_drawn_where_the_tracks_are():
    tr = _one_track()
    img = draw.draw_tracks(tr, trail_frames=8, radius=2)
    assert img.shape == (4, 48, 64, 3) and img.dtype == np.float32
    colour = draw.track_colours(1)[0] / 255.0
    assert np.allclose(img[0, 20, 10], colour, atol=1e-6)  # the dot
    assert np.allclose(img[3, 20, 34], colour, atol=1e-6)
    assert img[0, 40:, :].max() == 0 and img[0, :, 40:].max() == 0  # nothing else on black
    assert img[1].max() == 0  # hidden on frame 1: not drawn
    # frame 3 trails back to frame 2 only (frame 1 hidden breaks it): pixels between 26 and 34
    assert np.allclose(img[3, 20, 29], colour, atol=1e-6)
    assert img[3, 20, 18:23].max() == 0
    dots = draw.draw_tracks(tr, trail_frames=0, radius=2)
    assert dots[3, 20, 29].max() == 0  # no trail


def test_drawing_over_frames_of_another_size_scales_positions():
    tr = _one_track()
    frames = torch.full((4, 96, 128, 3), 0.25)
    img = draw.draw_tracks(tr, frames, radius=3)
    assert img.shape == (4, 96, 128, 3)
    colour = draw.track_colours(1)[0] / 255.0
    assert np.allclose(img[0, 40, 20], colour, atol=1e-6)  # (10.5 * 2 - 0.5, 20.5 * 2 - 0.5)
    assert np.allclose(img[0, 90, 120], 0.25, atol=1 / 255)  # the frame shows elsewhere
    with pytest.raises(ValueError, match="3 frames for tracks of 4"):
        draw.draw_tracks(tr, frames[:3])


def test_colours_differ_between_neighbouring_tracks():
    c = draw.track_colours(6).astype(int)
    assert c.shape == (6, 3) and all(np.abs(c[i] - c[i + 1]).sum() > 60 for i in range(5))


@pytest.fixture()
def hub(models_dir, monkeypatch):
    monkeypatch.delenv("MARIONETTE_COTRACKER_HUB", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield models_dir
    torch.set_num_threads(threads)


def test_track_node_runs_and_draw_node_draws(hub):
    vid = panning_video(frames=10, height=64, width=96, person_radius=10.0)
    node = tracking_node.MarionetteTrackBackground
    assert node.validate_inputs(model="offline") is True
    out = node.execute(images=vid.frames, model="offline", points=16, mask_dilation=6, chunk_frames=60,
                       tracking_long_side=512, person_mask=vid.mask)
    tracks, preview = out.args
    assert isinstance(tracks, PointTracks) and tracks.tracks.shape[0] == 10 and tracks.tracks.shape[1] > 0
    assert preview.shape == (10, 64, 96, 3) and preview.dtype == torch.float32
    assert not torch.equal(preview, vid.frames)  # points drawn over the video
    assert "tracks kept" in out.ui["text"][0]

    on_black = tracking_node.MarionetteDrawTracks.execute(point_tracks=tracks, trail_frames=4, point_radius=2.0).args[0]
    assert on_black.shape == (10, 64, 96, 3) and 0 < float(on_black.mean()) < 0.5
    over = tracking_node.MarionetteDrawTracks.execute(point_tracks=tracks, trail_frames=4, point_radius=2.0,
                                                      images=vid.frames).args[0]
    empty = on_black.sum(-1) == 0  # where no track is drawn the video shows through
    assert torch.allclose(over[empty], vid.frames[empty], atol=0.6 / 255)
    assert over.shape == (10, 64, 96, 3) and float(over.mean()) > float(on_black.mean())


def test_track_node_says_what_is_missing(tmp_path, monkeypatch):
    from marionette.models_loader import files

    monkeypatch.delenv("MARIONETTE_COTRACKER_HUB", raising=False)
    monkeypatch.setattr(files, "torch_hub_dir", lambda: tmp_path / "hub")
    files.set_models_dir(tmp_path / "models")
    try:
        msg = tracking_node.MarionetteTrackBackground.validate_inputs(model="online")
    finally:
        files.set_models_dir(None)
    assert isinstance(msg, str) and "git clone https://github.com/facebookresearch/co-tracker" in msg
