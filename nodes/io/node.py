"""I/O nodes: a folder of images from the input folder as one batch, in file-name order (core's
folder loader is experimental and unordered, which scrambles a video's frames)."""
from __future__ import annotations

import torch

from .. import comfy_bridge as bridge
from ..comfy_bridge import io, to_output_device
from ..media import read_image_folder

CATEGORY = "Marionette/io"


def _subfolders() -> list[str]:
    base = bridge.input_dir()
    if not base.is_dir():
        return []
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_dir())


class MarionetteLoadImageSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteLoadImageSequence",
            display_name="Load Image Sequence",
            category=CATEGORY,
            description="Loads every image of a sub-folder of ComfyUI's input folder as one batch, sorted by file "
                        "name (0001.png, 0002.png, ...): video frames, Champ guidance-map folders, or person masks.",
            inputs=[
                io.Combo.Input("folder", options=_subfolders() or ["(no sub-folders in the input folder)"],
                               tooltip="A sub-folder of the input folder holding .png/.jpg/.webp images of one size."),
                io.Int.Input("max_frames", default=0, min=0, max=100000,
                             tooltip="Load at most this many images (0 = all)."),
            ],
            outputs=[
                io.Image.Output("images", display_name="images", tooltip="The images as one batch, RGB."),
                io.Mask.Output("mask", display_name="mask",
                               tooltip="Per image: the alpha channel when the images have one, else their brightness "
                                       "(white = 1) — what a folder of person masks gives."),
                io.Int.Output("count", display_name="count", tooltip="How many images were loaded."),
            ],
        )

    @classmethod
    def validate_inputs(cls, folder):
        try:
            path = bridge.resolve_input(folder)
        except ValueError as exc:
            return str(exc)
        return True if path.is_dir() else f"'{folder}' is not a folder inside the input folder {bridge.input_dir()}"

    @classmethod
    def fingerprint_inputs(cls, folder, max_frames):
        path = bridge.resolve_input(folder)
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir())) if path.is_dir() else float("nan")

    @classmethod
    def execute(cls, folder, max_frames):
        rgb, mask = read_image_folder(bridge.resolve_input(folder), max_frames or None)
        return io.NodeOutput(to_output_device(torch.from_numpy(rgb)), to_output_device(torch.from_numpy(mask)),
                             int(len(rgb)))


NODES = [MarionetteLoadImageSequence]
