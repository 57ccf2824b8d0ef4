"""Track stage nodes, camera side: the camera motion from background tracks, and the moving
background plate. Thin: schema, input checks, one call into ``camera`` / ``plate``."""
from __future__ import annotations

import numpy as np
import torch

from ...models_loader import cache
from ..comfy_bridge import io, progress_callback, to_output_device, ui
from ..types import CAMERA_MOTION, POINT_TRACKS
from . import camera, plate

PointTracksType = io.Custom(POINT_TRACKS)
CameraMotionType = io.Custom(CAMERA_MOTION)
CATEGORY = "Marionette/track"


class MarionetteEstimateCameraMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteEstimateCameraMotion",
            display_name="Estimate Camera Motion",
            category=CATEGORY,
            description="Turns background point tracks into the camera's motion: one homography per frame relative to "
                        "the first frame, fitted robustly (RANSAC, then least squares on the agreeing points), "
                        "falling back to affine, similarity, translation or no motion where points get few. Shows "
                        "which model each frame got, how many points agreed and the residual.",
            inputs=[
                PointTracksType.Input("point_tracks", tooltip="Background point tracks (Track Background), in the "
                                                              "driving video's pixels."),
                io.Combo.Input("max_model", options=list(camera.MODELS[:-1]), default="homography",
                               tooltip="The richest motion to fit. homography: any camera rotation or zoom over a "
                                       "flat or distant background. Pick affine, similarity or translation for a "
                                       "camera that only pans or zooms, or when the background is close and deep."),
                io.Float.Input("threshold_px", default=3.0, min=0.25, max=50.0, step=0.25,
                               tooltip="How far (pixels) a point may be from the fitted motion and still count. Raise "
                                       "it for shaky or low-quality video, lower it for sharp video and a flat scene."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seeds the robust fit's sampling; the same seed and tracks give the same motion."),
            ],
            outputs=[CameraMotionType.Output("camera_motion", display_name="camera_motion",
                                             tooltip="Per-frame background motion relative to the first frame, for "
                                                     "Make Background Plate.")],
        )

    @classmethod
    def execute(cls, point_tracks, max_model, threshold_px, seed):
        camera.check_tracks(point_tracks)
        if np.asarray(point_tracks.tracks).shape[1] == 0 or not np.asarray(point_tracks.visibility).any():
            raise ValueError("the point tracks hold no visible background point, so the camera motion cannot be "
                             "measured: check the person mask given to Track Background (it may cover the whole "
                             "frame or be inverted) or track more points")
        motion = camera.estimate_camera_motion(point_tracks, max_model=max_model, threshold=threshold_px, seed=seed,
                                               progress=progress_callback(3 * len(point_tracks)))
        return io.NodeOutput(motion, ui=ui.PreviewText(camera.motion_report(motion)))


def _single(x: torch.Tensor, what: str, dims: int) -> torch.Tensor:
    """One image/mask out of a batch of one; an error naming the fix for bigger batches."""
    if x.dim() == dims + 1:
        if x.shape[0] != 1:
            raise ValueError(f"{what} holds {x.shape[0]} images; connect the single reference image's {what}")
        x = x[0]
    if x.dim() != dims:
        raise ValueError(f"{what} has shape {list(x.shape)}; expected a single {'image' if dims == 3 else 'mask'}")
    return x


class MarionetteMakeBackgroundPlate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteMakeBackgroundPlate",
            display_name="Make Background Plate",
            category=CATEGORY,
            description="Removes the person from the reference image (the dilated mask is filled smoothly from the "
                        "surrounding background) and moves what remains like the driving video's camera, one plate "
                        "frame per video frame, with a mask of the pixels that really come from the reference.",
            inputs=[
                io.Image.Input("reference_image", tooltip="The reference image (one image), framed like the "
                                                          "driving video's first frame."),
                io.Mask.Input("reference_mask", tooltip="The reference person's mask (white = person), same size as "
                                                        "the reference image."),
                CameraMotionType.Input("camera_motion", tooltip="The driving video's camera motion (Estimate Camera "
                                                                "Motion)."),
                io.Int.Input("dilation_px", default=8, min=0, max=256,
                             tooltip="Grow the person mask by this many reference pixels before filling, so hair, "
                                     "outline and shadow go too. Raise it for loose masks."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8,
                             tooltip="Plate width in pixels; 0 keeps the reference image's width."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8,
                             tooltip="Plate height in pixels; 0 keeps the reference image's height."),
                io.Combo.Input("padding", options=list(plate.PADDING), default="reflection",
                               tooltip="How areas the camera reveals beyond the reference are filled: mirrored "
                                       "(reflection) or stretched edge pixels (border). They are marked invalid."),
            ],
            outputs=[
                io.Image.Output("plate", display_name="plate",
                                tooltip="The background plate, one frame per video frame."),
                io.Mask.Output("valid", display_name="valid",
                               tooltip="1 where the plate's pixel comes from inside the reference image, 0 where it "
                                       "was filled by padding."),
            ],
        )

    @classmethod
    def execute(cls, reference_image, reference_mask, camera_motion, dilation_px, width, height, padding):
        ref = _single(reference_image, "reference_image", 3)
        mask = _single(reference_mask, "reference_mask", 2)
        result = plate.make_background_plate(ref, mask, camera_motion, dilation_px=dilation_px, width=width,
                                             height=height, padding=padding, device=cache.torch_device(),
                                             progress=progress_callback(len(camera_motion)))
        valid = result.valid
        text = (f"{valid.shape[0]} plate frames, {valid.shape[2]}×{valid.shape[1]}: filled "
                f"{100 * float(result.hole.mean()):.1f}% of the reference; "
                f"{100 * float(valid.mean()):.1f}% of plate pixels come from the reference "
                f"(worst frame {100 * float(valid.mean((1, 2)).min()):.1f}%)")
        return io.NodeOutput(to_output_device(result.frames), to_output_device(valid), ui=ui.PreviewText(text))


NODES = [MarionetteEstimateCameraMotion, MarionetteMakeBackgroundPlate]
