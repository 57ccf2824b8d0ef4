"""Body stage nodes: load a parametric body, fit it to keypoints (and masks), give the driving
poses the reference person's shape, save and load fitted sequences.

Thin by design: schema, cheap checks, one call into ``models`` / ``fit`` / ``align`` / ``io``.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import keypoints as kp_format
from .. import comfy_bridge as bridge
from ..comfy_bridge import io, progress_callback, ui
from ..types import BODY_MODEL, BODY_SEQUENCE, POSE_KEYPOINT
from . import align, fit, models
from . import io as body_io

PoseKeypoint = io.Custom(POSE_KEYPOINT)
BodyModelType = io.Custom(BODY_MODEL)
BodySequenceType = io.Custom(BODY_SEQUENCE)
CATEGORY = "Marionette/body"

QUALITY = {"fast": 0.5, "balanced": 1.0, "best": 1.6}  # × FitConfig's optimisation steps per stage


def fit_config(quality: str, **kwargs) -> fit.FitConfig:
    """FitConfig with every stage's step count (``*_iters``) scaled for ``quality``."""
    base = fit.FitConfig(**kwargs)
    scale = QUALITY[quality]
    steps = {k: max(1, int(round(v * scale))) for k, v in vars(base).items() if k.endswith("_iters")}
    return fit.FitConfig(**{**kwargs, **steps})
PLACEMENTS = ["keep driving camera", "match reference"]


class MarionetteLoadBodyModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteLoadBodyModel",
            display_name="Load Body Model",
            category=CATEGORY,
            description="Loads a parametric body model for fitting: Anny (free, built in, no download) or SMPL / "
                        "SMPL-X from files you register for and place in models/smpl or models/smplx. Loaded once "
                        "and shared by every node.",
            inputs=[
                io.Combo.Input("model", options=list(models.BODY_MODELS), default="anny",
                               tooltip="anny: CC0 body that ships with the pack (first use builds a cache, ~3 min). "
                                       "smpl / smplx: what Champ was trained on; non-commercial files you download."),
                io.Combo.Input("variant", options=list(models.VARIANTS), default="neutral",
                               tooltip="SMPL / SMPL-X gender file to use; Anny ignores it (gender is part of its shape)."),
                io.Boolean.Input("with_fingers", default=True,
                                 tooltip="Articulate the fingers (Anny, SMPL-X). Off fits faster when hands do not matter."),
            ],
            outputs=[BodyModelType.Output("body_model", display_name="body_model",
                                          tooltip="The loaded body model, for Fit Body Model and Align Body Shape.")],
        )

    @classmethod
    def execute(cls, model, variant, with_fingers):
        # ComfyUI runs nodes under inference_mode; the body's tensors must be ordinary ones
        # because fitting differentiates through them.
        with torch.inference_mode(False):
            return io.NodeOutput(models.load_body_model(model, variant, with_fingers=with_fingers))


def _masks_for(masks, n_frames: int, width: int, height: int):
    """MASK batch → bool ``[T, H, W]`` at the keypoints' canvas size, checked against the frames."""
    if masks is None:
        return None
    m = masks if masks.dim() == 3 else masks.unsqueeze(0)
    if m.shape[0] == 1 and n_frames > 1:
        raise ValueError(f"1 mask for {n_frames} frames: connect one person mask per frame (or fit one image).")
    if m.shape[0] != n_frames:
        raise ValueError(f"{m.shape[0]} masks for {n_frames} keypoint frames: the mask batch must have one mask per "
                         f"frame of the same video.")
    h, w = m.shape[1:]
    if (h, w) != (height, width):
        if abs(w / h - width / height) > 0.01:
            raise ValueError(f"masks are {w}×{h} but the keypoints' frames are {width}×{height} (another aspect "
                             f"ratio): make the masks from the same frames.")
        m = torch.nn.functional.interpolate(m[:, None].float(), size=(height, width), mode="nearest")[:, 0]
    return (m > 0.5).cpu().numpy()


class MarionetteFitBody(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteFitBody",
            display_name="Fit Body Model",
            category=CATEGORY,
            description="Fits a 3D body to one person's keypoints over the whole video at once: one body shape, "
                        "a pose and position per frame, a camera; robust to missing or noisy points and occluded "
                        "limbs, smooth over time. Person masks (from any segmentation node) add a silhouette term "
                        "that fits the body's girth. Works on a single image too (the reference).",
            inputs=[
                PoseKeypoint.Input("pose_keypoint", tooltip="Keypoints per frame (Estimate Pose, Load Pose Keypoints "
                                                            "or comfyui_controlnet_aux); the canvas size is the image size."),
                BodyModelType.Input("body_model", tooltip="The body to fit (Load Body Model)."),
                io.Mask.Input("masks", optional=True,
                              tooltip="Optional person mask per frame (white = person). Makes the shape follow the "
                                      "person's outline; strongly recommended for the reference image."),
                io.Int.Input("person", default=0, min=0, max=16,
                             tooltip="Which person of the keypoints to fit when a frame holds several (0 = first)."),
                io.Combo.Input("focal_length", options=["diagonal", "hmr2"], default="diagonal",
                               tooltip="Camera lens: 'diagonal' (a phone/consumer lens, focal = image diagonal) or "
                                       "'hmr2' (the near-orthographic lens of Champ's HMR2.0 data)."),
                io.Combo.Input("quality", options=list(QUALITY), default="balanced",
                               tooltip="More optimisation steps fit better and take longer."),
            ],
            outputs=[BodySequenceType.Output("body_sequence", display_name="body_sequence",
                                             tooltip="The fitted body per frame (save it, align it, render it).")],
        )

    @classmethod
    def execute(cls, pose_keypoint, body_model, person, focal_length, quality, masks=None):
        arrays = kp_format.pose_keypoint_to_dense(pose_keypoint)
        if person >= arrays.num_people:
            raise ValueError(f"person {person} was asked for but the keypoints hold at most {arrays.num_people} "
                             f"person(s) per frame; use 0 to fit the first.")
        width, height = int(arrays.widths[0]), int(arrays.heights[0])
        if len(set(arrays.widths.tolist())) > 1 or len(set(arrays.heights.tolist())) > 1:
            raise ValueError("the keypoint frames have different canvas sizes; fit one video at a time.")
        kps = arrays.keypoints[:, person]
        config = fit_config(quality, focal=focal_length)
        mask_arr = _masks_for(masks, len(kps), width, height)
        # Fitting is gradient descent: leave ComfyUI's inference_mode for it.
        with torch.inference_mode(False), torch.enable_grad():
            seq = fit.fit_sequence(body_model, kps, width, height, masks=mask_arr, config=config,
                                   progress=progress_callback(100))
        return io.NodeOutput(seq, ui=ui.PreviewText(fit_report(seq)))


def fit_report(seq) -> str:
    err = np.asarray(seq.fit_error, dtype=float)
    good = err[np.isfinite(err)]
    text = (f"{len(seq)} frames fitted with {seq.model}: mean keypoint error "
            f"{good.mean():.1f} px (worst {good.max():.1f} px)" if good.size else f"{len(seq)} frames fitted")
    iou = seq.extras.get("silhouette_iou")
    if iou is not None and len(iou):
        text += f"; silhouette IoU {np.nanmean(iou):.2f}"
    bad = list(seq.extras.get("bad_frames", []))
    if bad:
        text += f"\nframes that fit badly (check their keypoints): {bad[:20]}" + (" …" if len(bad) > 20 else "")
    return text


class MarionetteAlignBodyShape(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteAlignBodyShape",
            display_name="Align Body Shape",
            category=CATEGORY,
            description="Champ's parametric shape alignment: keeps the driving video's poses but gives the body the "
                        "reference person's shape, so the animation keeps the reference's proportions. Optionally "
                        "places the body where the reference person stands (Champ's view transfer).",
            inputs=[
                BodySequenceType.Input("reference", tooltip="The body fitted to the reference image (one frame)."),
                BodySequenceType.Input("driving", tooltip="The bodies fitted to the driving video."),
                BodyModelType.Input("body_model", tooltip="The body model both were fitted with."),
                io.Combo.Input("placement", options=PLACEMENTS, default="keep driving camera",
                               tooltip="'keep driving camera': the body moves through the frame as in the driving "
                                       "video. 'match reference': the body starts where and as large as the reference "
                                       "person and keeps only the driving motion relative to its first frame; output "
                                       "size = the reference image's."),
                io.Float.Input("smooth", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Extra temporal smoothing of the driving motion (0 = none, 1 = strong)."),
            ],
            outputs=[BodySequenceType.Output("body_sequence", display_name="body_sequence",
                                             tooltip="Driving poses with the reference shape.")],
        )

    @classmethod
    def execute(cls, reference, driving, body_model, placement, smooth):
        return io.NodeOutput(align.align_shape(reference, driving, body_model, placement=placement, smooth=smooth))


class MarionetteSaveBodySequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteSaveBodySequence",
            display_name="Save Body Sequence",
            category=CATEGORY,
            description="Saves fitted bodies as an .npz in the output folder: camera-space vertices, faces, "
                        "intrinsics, projected keypoints and the model parameters, readable with plain numpy "
                        "(Blender, scripts) — format in the README.",
            inputs=[
                BodySequenceType.Input("body_sequence", tooltip="The bodies to save."),
                io.String.Input("filename_prefix", default="marionette/body",
                                tooltip="File name prefix inside the output folder; a counter is appended."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, body_sequence, filename_prefix):
        path = bridge.save_path(filename_prefix, ".npz")
        body_io.save_npz(body_sequence, path)
        return io.NodeOutput(ui={"npz": [bridge.saved_entry(path)],
                                 "text": [f"saved {len(body_sequence)} frames to {path.name}"]})


class MarionetteLoadBodySequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteLoadBodySequence",
            display_name="Load Body Sequence",
            category=CATEGORY,
            description="Loads fitted bodies saved by Save Body Sequence (an .npz in the input folder), e.g. to "
                        "render them again at another size without fitting again.",
            inputs=[io.Combo.Input("file", options=bridge.input_files(".npz") or ["(no .npz files in the input folder)"],
                                   tooltip="An .npz body sequence in ComfyUI's input folder.")],
            outputs=[BodySequenceType.Output("body_sequence", display_name="body_sequence",
                                             tooltip="The loaded bodies.")],
        )

    @classmethod
    def validate_inputs(cls, file):
        return bridge.check_input_file(file, "body sequence file")

    @classmethod
    def fingerprint_inputs(cls, file):
        path = bridge.resolve_input(file)
        return path.stat().st_mtime_ns if path.is_file() else float("nan")

    @classmethod
    def execute(cls, file):
        return io.NodeOutput(body_io.load_npz(bridge.resolve_input(file)))


NODES = [MarionetteLoadBodyModel, MarionetteFitBody, MarionetteAlignBodyShape, MarionetteSaveBodySequence,
         MarionetteLoadBodySequence]
