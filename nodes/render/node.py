"""Render stage node: Champ's guidance maps (depth, normal, semantic, mask) and the DWPose
skeleton, all from fitted bodies. Thin: schema, one call into ``maps``, one into the skeleton
drawer."""
from __future__ import annotations

import numpy as np
import torch

from .. import keypoints as kp_format
from .. import skeleton
from ..comfy_bridge import io, progress_callback, to_output_device
from ..types import BODY_SEQUENCE, POSE_KEYPOINT
from . import maps

BodySequenceType = io.Custom(BODY_SEQUENCE)
PoseKeypoint = io.Custom(POSE_KEYPOINT)
CATEGORY = "Marionette/render"


def body_keypoints(seq, width: int, height: int) -> list[dict]:
    """The fitted bodies' own projected keypoints as POSE_KEYPOINT at ``width``×``height``
    (points the model does not have, or that fall outside the image, are left out)."""
    k2d = np.asarray(seq.keypoints2d, dtype=np.float32).copy()
    # The maps' rule for another size (pixel centres at integers): u' = s (u + 0.5) - 0.5.
    sx, sy = width / seq.width, height / seq.height
    k2d[..., 0] = sx * (k2d[..., 0] + 0.5) - 0.5
    k2d[..., 1] = sy * (k2d[..., 1] + 0.5) - 0.5
    valid = np.isfinite(k2d).all(-1) & (k2d[..., 0] >= 0) & (k2d[..., 0] < width) & (k2d[..., 1] >= 0) \
        & (k2d[..., 1] < height)
    dense = np.zeros(k2d.shape[:2] + (3,), np.float32)
    dense[..., :2] = np.where(valid[..., None], k2d, 0)
    dense[..., 2] = valid.astype(np.float32)
    return kp_format.dense_to_pose_keypoint(dense[:, None], width, height)


class MarionetteRenderBodyGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteRenderBodyGuidance",
            display_name="Render Body Guidance",
            category=CATEGORY,
            description="Renders Champ's guidance maps from fitted bodies exactly as Champ's training data: depth "
                        "(near white, far body black, per frame), camera-space normals, SMPL-part semantic colours "
                        "and the body mask, plus the DWPose skeleton drawn from the body's own keypoints.",
            inputs=[
                BodySequenceType.Input("body_sequence", tooltip="Fitted (and usually shape-aligned) bodies."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Output width in pixels; 0 keeps the bodies' image width."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Output height in pixels; 0 keeps the bodies' image height."),
                io.Boolean.Input("skeleton_hands", default=True, tooltip="Draw the hands in the skeleton map."),
                io.Boolean.Input("skeleton_face", default=True,
                                 tooltip="Draw the face in the skeleton map (Champ's dwpose maps include it)."),
            ],
            outputs=[
                io.Image.Output("depth", display_name="depth", tooltip="Depth map per frame (Champ convention)."),
                io.Image.Output("normal", display_name="normal", tooltip="Camera-space normal map per frame."),
                io.Image.Output("semantic", display_name="semantic", tooltip="SMPL-part semantic map per frame."),
                io.Mask.Output("mask", display_name="mask", tooltip="Body mask per frame (1 = body)."),
                io.Image.Output("skeleton", display_name="skeleton",
                                tooltip="DWPose skeleton of the body's own keypoints per frame."),
                PoseKeypoint.Output("pose_keypoint", display_name="pose_keypoint",
                                    tooltip="The body's projected keypoints in the OpenPose/controlnet_aux format."),
            ],
        )

    @classmethod
    def execute(cls, body_sequence, width, height, skeleton_hands, skeleton_face):
        width = width or body_sequence.width
        height = height or body_sequence.height
        out = maps.render_guidance(body_sequence, width, height, progress=progress_callback(len(body_sequence)))
        poses = body_keypoints(body_sequence, width, height)
        skel = skeleton.draw_frames(poses, width=width, height=height, hands=skeleton_hands, face=skeleton_face)

        def t(a):
            return to_output_device(torch.from_numpy(np.ascontiguousarray(a)))

        return io.NodeOutput(t(out["depth"]), t(out["normal"]), t(out["semantic"]), t(out["mask"]), t(skel), poses)


NODES = [MarionetteRenderBodyGuidance]
