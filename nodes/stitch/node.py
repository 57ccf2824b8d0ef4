"""Long-video stage node: the Clip Stitcher, the plan Animate follows to join clips.

Thin by design: the schema, ``stitching.validate`` for the checks, a ``Stitching`` out.
"""
from __future__ import annotations

from ..comfy_bridge import io
from ..types import STITCHING, Stitching
from . import stitching

StitchingType = io.Custom(STITCHING)
CATEGORY = "Marionette/stitch"


class MarionetteClipStitcher(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteClipStitcher",
            display_name="Stitch Clips",
            category=CATEGORY,
            description="Chooses how Animate joins clips into a long video. aggregate: Champ's official temporal "
                        "aggregation (windows of clip_frames overlapping by overlap, averaged at every denoising "
                        "step); the smoothest result, but every frame's latents stay in memory for the whole run: "
                        "best up to a few hundred frames. chain: the video is generated clip by clip, each clip "
                        "starting from the previous clip's last overlap frames, and frames are streamed out, so "
                        "memory stays constant for videos of any length; seams are cross-faded and each clip's "
                        "colours matched to the reference image so colours do not drift.",
            inputs=[
                io.Combo.Input("mode", options=list(stitching.MODES), default="aggregate",
                               tooltip="aggregate: Champ's official windows averaged at every step (best quality "
                                       "up to a few hundred frames). chain: clip by clip at constant memory, for "
                                       "long videos."),
                io.Int.Input("clip_frames", default=24, min=2, max=stitching.MAX_CLIP_FRAMES,
                             tooltip="Frames per window (aggregate) or clip (chain). Official 24; at most 32, the "
                                     "motion modules' position encoding. Shorter uses less memory per UNet call."),
                io.Int.Input("overlap", default=4, min=0, max=stitching.MAX_CLIP_FRAMES - 1,
                             tooltip="Frames neighbouring windows/clips share (official 4); must be below "
                                     "clip_frames. More overlap gives smoother seams and costs more clips."),
                io.Combo.Input("blend", options=list(stitching.BLENDS), default="linear",
                               tooltip="chain only: how the shared frames of two clips are joined. linear: a "
                                       "cross-fade (smoothest). pyramid: colours cross-faded over the whole overlap, "
                                       "fine detail over its middle (less ghosting when clips disagree on "
                                       "texture). none: take the later clip's frames."),
                io.Combo.Input("color_match", options=list(stitching.COLOR_MATCHES), default="reference",
                               tooltip="reference: match each clip's colours (Lab mean and spread, one correction "
                                       "per clip, bounded) to the reference image, so colours do not drift from "
                                       "clip to clip in chain mode. none: leave the colours as generated."),
                io.Float.Input("color_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="How much of the colour correction is applied: 1 full, 0 none. Lower it "
                                       "when the video's content legitimately differs from the reference's colours "
                                       "(e.g. new lighting)."),
            ],
            outputs=[StitchingType.Output("stitching", display_name="stitching",
                                          tooltip="The stitching plan for Animate's stitching input.")],
        )

    @classmethod
    def validate_inputs(cls, mode, clip_frames, overlap, blend, color_match, color_strength):
        try:
            stitching.validate(Stitching(mode, clip_frames, overlap, blend, color_match, color_strength))
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, mode, clip_frames, overlap, blend, color_match, color_strength):
        plan = stitching.validate(Stitching(mode=mode, clip_frames=clip_frames, overlap=overlap, blend=blend,
                                            color_match=color_match, color_strength=color_strength))
        return io.NodeOutput(plan)


NODES = [MarionetteClipStitcher]
