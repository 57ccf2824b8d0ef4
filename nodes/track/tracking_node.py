"""Track stage nodes, tracking family: CoTracker3 background points outside the person, and
drawing them. Thin: schema, cheap checks, one call into ``cotracker`` / ``draw``."""
from __future__ import annotations

import numpy as np
import torch

from ...models_loader import files
from ..comfy_bridge import io, progress_callback, to_output_device, ui
from ..types import POINT_TRACKS
from . import cotracker, draw

PointTracksType = io.Custom(POINT_TRACKS)
CATEGORY = "Marionette/track"


def _image(a: np.ndarray) -> torch.Tensor:
    return to_output_device(torch.from_numpy(np.ascontiguousarray(a)))


def _radius(width: int, height: int) -> float:
    return max(2.0, max(width, height) / 200.0)


class MarionetteTrackBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteTrackBackground",
            display_name="Track Background Points (CoTracker3)",
            category=CATEGORY,
            description=(
                "Tracks points on a regular grid outside the person's (dilated) mask through the whole video with "
                "CoTracker3, in chunks so long videos fit in memory; points that reach the person or are lost are "
                "replaced, unreliable tracks are dropped. Needs the co-tracker code cloned into "
                "models/cotracker/co-tracker and its checkpoint in models/cotracker (CC-BY-NC, non-commercial)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The driving video as a batch of frames."),
                io.Combo.Input("model", options=list(cotracker.MODES), default="offline",
                               tooltip="offline: scaled_offline.pth, each chunk seen whole (most accurate). online: "
                                       "scaled_online.pth, sliding 16-frame windows (least memory per step)."),
                io.Int.Input("points", default=256, min=5, max=2048,
                             tooltip="How many background points to keep tracking at once; lost ones are replaced "
                                     "by new grid points at the next chunk. More points: steadier camera motion, "
                                     "slower."),
                io.Int.Input("mask_dilation", default=16, min=0, max=256,
                             tooltip="Pixels the person mask grows by before points are placed and checked: keeps "
                                     "points off the person's edges, hair and loose clothes."),
                io.Int.Input("chunk_frames", default=60, min=8, max=600,
                             tooltip="Frames tracked per call (neighbouring chunks share 4 frames). Lower it when "
                                     "memory runs out; points are re-seeded once per chunk."),
                io.Int.Input("tracking_long_side", default=512, min=0, max=4096, step=16,
                             tooltip="Frames are shrunk to this long side for tracking and the tracks scaled back "
                                     "(CoTracker works at 512x384 anyway). 0 tracks at the video's size."),
                io.Mask.Input("person_mask", optional=True,
                              tooltip="The person's mask per frame (white = person), or one mask for every frame. "
                                      "Without it, points are placed over the whole frame."),
            ],
            outputs=[
                PointTracksType.Output("point_tracks", display_name="point_tracks",
                                       tooltip="Background tracks [frames, points, 2] in pixels with visibility, for "
                                               "Estimate Camera Motion and Draw Point Tracks."),
                io.Image.Output("preview", display_name="preview",
                                tooltip="The tracks drawn over the video (dots with short trails)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model):
        try:
            cotracker.check_models(model)
        except files.ModelFileMissing as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, images, model, points, mask_dilation, chunk_frames, tracking_long_side, person_mask=None):
        config = cotracker.TrackConfig(points=points, mask_dilation=mask_dilation, chunk_frames=chunk_frames,
                                       overlap_frames=min(4, chunk_frames // 2), track_long_side=tracking_long_side)
        tracks = cotracker.track_background(images, person_mask, mode=model, config=config,
                                            progress=progress_callback(1))
        preview = draw.draw_tracks(tracks, images, radius=_radius(tracks.width, tracks.height))
        dropped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in tracks.extras["dropped"].items() if v)
        summary = (f"{tracks.tracks.shape[1]} tracks kept of {tracks.extras['seeded']} seeded over {len(tracks)} frames"
                   + (f" (dropped: {dropped})" if dropped else ""))
        return io.NodeOutput(tracks, _image(preview), ui=ui.PreviewText(summary))


class MarionetteDrawTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteDrawTracks",
            display_name="Draw Point Tracks",
            category=CATEGORY,
            description="Draws point tracks as images: a dot per visible point with a short trail, one colour per "
                        "track, over the video or on black (a preview or guidance map).",
            inputs=[
                PointTracksType.Input("point_tracks", tooltip="Tracks from Track Background Points."),
                io.Int.Input("trail_frames", default=8, min=0, max=120,
                             tooltip="How many earlier frames each trail reaches back; 0 draws dots only."),
                io.Float.Input("point_radius", default=3.0, min=0.5, max=32.0, step=0.5,
                               tooltip="Dot radius in output pixels."),
                io.Image.Input("images", optional=True,
                               tooltip="Frames to draw over (the tracked video, any size); without them the tracks "
                                       "are drawn on black at the video's size."),
            ],
            outputs=[io.Image.Output("image", display_name="image", tooltip="One image per frame of the tracks.")],
        )

    @classmethod
    def execute(cls, point_tracks, trail_frames, point_radius, images=None):
        return io.NodeOutput(_image(draw.draw_tracks(point_tracks, images, trail_frames, point_radius)))


NODES = [MarionetteTrackBackground, MarionetteDrawTracks]
