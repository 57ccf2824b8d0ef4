"""Pose stage nodes: estimate whole-body keypoints with DWPose, draw them, load and save them.

Thin by design: schema, cheap checks, one call into ``dwpose`` / ``draw`` / ``keypoints``.
"""
from __future__ import annotations


import numpy as np
import torch

from ...models_loader import catalog, files
from .. import keypoints as kp_format
from .. import comfy_bridge as bridge
from ..comfy_bridge import io, progress_callback, to_output_device, ui
from ..types import POSE_KEYPOINT
from .. import skeleton as draw
from . import dwpose

PoseKeypoint = io.Custom(POSE_KEYPOINT)
CATEGORY = "Marionette/pose"

FOLLOW_OPTIONS = ["largest", "most central"]


def _model_options(model_id: str) -> list[str]:
    return files.list_candidates(catalog.model(model_id))


def _part_switches() -> list:
    return [
        io.Boolean.Input("draw_body", default=True, tooltip="Draw the 18-point body (and feet are never drawn, as in ControlNet)."),
        io.Boolean.Input("draw_hands", default=True, tooltip="Draw both hands (21 points each)."),
        io.Boolean.Input("draw_face", default=True, tooltip="Draw the 68 face points. Champ's skeleton maps include the face; UniAnimate's do not."),
    ]


def _skeleton(frames: list[dict], width: int, height: int, body: bool, hands: bool, face: bool) -> torch.Tensor:
    images = draw.draw_frames(frames, width=width or None, height=height or None, body=body, hands=hands, face=face)
    return to_output_device(torch.from_numpy(np.ascontiguousarray(images)))


class MarionetteEstimatePose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteEstimatePose",
            display_name="Estimate Pose (DWPose)",
            category=CATEGORY,
            description=(
                "Finds one person in every frame and estimates 134 whole-body keypoints (body, feet, face, hands) "
                "with the official DWPose ONNX models, following the same person through the video and filling "
                "short gaps. Uses the files comfyui_controlnet_aux already downloaded when present."
            ),
            inputs=[
                io.Image.Input("images", tooltip="A single image or a video as a batch of frames."),
                io.Combo.Input("detector", options=_model_options("dwpose_detector"), default="yolox_l.onnx",
                               tooltip="Person detector file in models/dwpose (YOLOX-L, yolox_l.onnx)."),
                io.Combo.Input("pose_model", options=_model_options("dwpose_pose"), default="dw-ll_ucoco_384.onnx",
                               tooltip="Whole-body pose model file in models/dwpose (dw-ll_ucoco_384.onnx)."),
                io.Combo.Input("follow", options=FOLLOW_OPTIONS, default="largest",
                               tooltip="Which person to follow when several are visible: the largest one, or the one "
                                       "nearest the image centre. The choice is made on the first frames, then tracked."),
                io.Int.Input("max_gap_frames", default=8, min=0, max=240,
                             tooltip="Frames without a detection up to this length are filled by interpolating the "
                                     "keypoints on both sides; longer gaps stay empty. 0 disables filling."),
                *_part_switches(),
            ],
            outputs=[
                PoseKeypoint.Output("pose_keypoint", display_name="pose_keypoint",
                                    tooltip="Keypoints per frame in the OpenPose/comfyui_controlnet_aux format."),
                io.Image.Output("skeleton", display_name="skeleton",
                                tooltip="The keypoints drawn as ControlNet/Champ skeleton images, one per frame."),
            ],
        )

    @classmethod
    def validate_inputs(cls, detector, pose_model):
        for model_id, name in (("dwpose_detector", detector), ("dwpose_pose", pose_model)):
            try:
                files.find(model_id, name)
            except files.ModelFileMissing as exc:
                return str(exc)
        return True

    @classmethod
    def execute(cls, images, detector, pose_model, follow, max_gap_frames, draw_body, draw_hands, draw_face):
        result = dwpose.estimate_video(
            images, detector_file=detector, pose_model_file=pose_model,
            follow="centre" if follow == "most central" else "largest",
            max_gap_frames=max_gap_frames, progress=progress_callback(len(images)),
        )
        frames = kp_format.dense_to_pose_keypoint(result.keypoints, result.width, result.height)
        skeleton = _skeleton(frames, result.width, result.height, draw_body, draw_hands, draw_face)
        return io.NodeOutput(frames, skeleton, ui=ui.PreviewText(result.summary()))


class MarionetteDrawPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteDrawPose",
            display_name="Draw Pose Keypoints",
            category=CATEGORY,
            description="Draws keypoints as ControlNet/Champ skeleton images (DWPose annotator colours and sizes), "
                        "at the keypoints' canvas size or any other.",
            inputs=[
                PoseKeypoint.Input("pose_keypoint", tooltip="Keypoints from Estimate Pose, Load Pose Keypoints or "
                                                            "comfyui_controlnet_aux."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8,
                             tooltip="Output width in pixels; 0 keeps each frame's canvas width."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8,
                             tooltip="Output height in pixels; 0 keeps each frame's canvas height."),
                *_part_switches(),
            ],
            outputs=[io.Image.Output("skeleton", display_name="skeleton", tooltip="One skeleton image per frame.")],
        )

    @classmethod
    def execute(cls, pose_keypoint, width, height, draw_body, draw_hands, draw_face):
        if not pose_keypoint:
            raise ValueError("Draw Pose Keypoints got no frames: the pose_keypoint input is empty.")
        return io.NodeOutput(_skeleton(pose_keypoint, width, height, draw_body, draw_hands, draw_face))


class MarionetteLoadPoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteLoadPoseKeypoints",
            display_name="Load Pose Keypoints (JSON)",
            category=CATEGORY,
            description="Loads keypoints saved as JSON by Marionette or comfyui_controlnet_aux (one dict per frame) "
                        "from ComfyUI's input folder.",
            inputs=[io.Combo.Input("file", options=bridge.input_files(".json") or ["(no .json files in the input folder)"],
                                   tooltip="A .json keypoints file in ComfyUI's input folder (sub-folders allowed).")],
            outputs=[
                PoseKeypoint.Output("pose_keypoint", display_name="pose_keypoint", tooltip="The keypoints, one entry per frame."),
                io.Int.Output("frames", display_name="frames", tooltip="Number of frames in the file."),
                io.Int.Output("width", display_name="width", tooltip="Canvas width of the first frame, in pixels."),
                io.Int.Output("height", display_name="height", tooltip="Canvas height of the first frame, in pixels."),
            ],
        )

    @classmethod
    def validate_inputs(cls, file):
        return bridge.check_input_file(file, "keypoints file")

    @classmethod
    def fingerprint_inputs(cls, file):
        path = bridge.resolve_input(file)
        return path.stat().st_mtime_ns if path.is_file() else float("nan")

    @classmethod
    def execute(cls, file):
        # Normalise other producers' variants (BODY_25, triples, real confidences) to the
        # comfyui_controlnet_aux layout, so downstream nodes of any pack can read it.
        arrays = kp_format.pose_keypoint_to_dense(kp_format.load_json(bridge.resolve_input(file)))
        frames = kp_format.dense_to_pose_keypoint(arrays.keypoints, arrays.widths, arrays.heights)
        return io.NodeOutput(frames, len(frames), int(arrays.widths[0]), int(arrays.heights[0]))


class MarionetteSavePoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteSavePoseKeypoints",
            display_name="Save Pose Keypoints (JSON)",
            category=CATEGORY,
            description="Saves keypoints as a JSON file in ComfyUI's output folder, in the format "
                        "comfyui_controlnet_aux reads and writes (plus feet and raw confidences).",
            inputs=[
                PoseKeypoint.Input("pose_keypoint", tooltip="Keypoints to save."),
                io.String.Input("filename_prefix", default="marionette/pose",
                                tooltip="File name prefix inside the output folder; a counter is appended."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, pose_keypoint, filename_prefix):
        if not pose_keypoint:
            raise ValueError("Save Pose Keypoints got no frames: the pose_keypoint input is empty.")
        path = bridge.save_path(filename_prefix, ".json")
        kp_format.save_json(pose_keypoint, path)
        return io.NodeOutput(ui={"json": [bridge.saved_entry(path)],
                                 "text": [f"saved {len(pose_keypoint)} frames to {path.name}"]})


NODES = [MarionetteEstimatePose, MarionetteDrawPose, MarionetteLoadPoseKeypoints, MarionetteSavePoseKeypoints]
