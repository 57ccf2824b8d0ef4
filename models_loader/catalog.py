"""Every model file Marionette can use: where it lives, what it is called, how it is laid out,
its licence and where users get it. The one place that knows model files; the README's models
table is generated from it (``python -m ... scripts/models_table.py``).

Nothing here touches the disk: ``files.py`` finds and loads, ``cache.py`` keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX input or output: its name in the official export and its shape
    (``None`` marks a dynamic axis, e.g. the batch of an export with ``dynamic_axes``)."""

    name: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Folder:
    """A model folder. ``key`` is the ComfyUI ``folder_paths`` key (``models/<key>`` by
    default, extendable through ``extra_model_paths.yaml``); ``also`` lists other keys whose
    folders are searched too (files users already have for other packs)."""

    key: str
    extensions: tuple[str, ...]
    description: str
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelFile:
    """One model file as its authors publish it.

    Args:
        id: catalog id used in code (``"dwpose_detector"``).
        title: what users call it.
        folder: key of the folder it goes into (see ``FOLDERS``).
        names: accepted file names; the first is the published one.
        kind: ``"onnx"`` or ``"state_dict"``.
        layout: the published layout in words (shown in errors and the README).
        licence: licence of the weights.
        url: where users download it.
        onnx_inputs / onnx_outputs: the official export's signature, checked on load so a
            wrong file gives a clear error instead of a shape traceback.
        foreign_dirs: folders of other packs (relative to a ``custom_nodes`` folder) that
            keep the same file, so nobody downloads it twice.
        hf_repo: Hugging Face repo id, to find the file in the local HF hub cache.
    """

    id: str
    title: str
    folder: str
    names: tuple[str, ...]
    kind: str
    layout: str
    licence: str
    url: str
    onnx_inputs: tuple[TensorSpec, ...] = ()
    onnx_outputs: tuple[TensorSpec, ...] = ()
    foreign_dirs: tuple[str, ...] = ()
    hf_repo: str | None = None
    size_hint_mb: float | None = None
    notes: str = field(default="", compare=False)


ONNX_EXT = (".onnx",)

FOLDERS: dict[str, Folder] = {
    f.key: f
    for f in (
        Folder(
            key="dwpose",
            extensions=ONNX_EXT,
            description="DWPose ONNX pair (detector + whole-body pose model)",
            # kijai's WanAnimatePreprocess keeps detection ONNX files in models/detection.
            also=("detection",),
        ),
    )
}

# comfyui_controlnet_aux downloads into <its folder>/ckpts/<hf repo id>/...
_CONTROLNET_AUX = "comfyui_controlnet_aux/ckpts/yzd-v/DWPose"

MODELS: dict[str, ModelFile] = {
    m.id: m
    for m in (
        ModelFile(
            id="dwpose_detector",
            title="DWPose person detector (YOLOX-L)",
            folder="dwpose",
            names=("yolox_l.onnx",),
            kind="onnx",
            layout="ONNX, input 'images' [1,3,640,640] (BGR 0-255, letterboxed), output "
            "'output' [1,8400,85] (YOLOX raw grid predictions, objectness and class "
            "scores after sigmoid)",
            licence="Apache-2.0",
            url="https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx",
            onnx_inputs=(TensorSpec("images", (None, 3, 640, 640)),),
            onnx_outputs=(TensorSpec("output", (None, 8400, 85)),),
            foreign_dirs=(_CONTROLNET_AUX,),
            hf_repo="yzd-v/DWPose",
            size_hint_mb=217,
        ),
        ModelFile(
            id="dwpose_pose",
            title="DWPose whole-body pose model (dw-ll_ucoco_384)",
            folder="dwpose",
            names=("dw-ll_ucoco_384.onnx",),
            kind="onnx",
            layout="ONNX, input 'input' [1,3,384,288] (normalised BGR crop), outputs "
            "'simcc_x' [1,133,576] and 'simcc_y' [1,133,768] (SimCC, split ratio 2)",
            licence="Apache-2.0",
            url="https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",
            onnx_inputs=(TensorSpec("input", (None, 3, 384, 288)),),
            onnx_outputs=(
                TensorSpec("simcc_x", (None, 133, 576)),
                TensorSpec("simcc_y", (None, 133, 768)),
            ),
            foreign_dirs=(_CONTROLNET_AUX,),
            hf_repo="yzd-v/DWPose",
            size_hint_mb=135,
        ),
    )
}


def model(model_id: str) -> ModelFile:
    """The catalog entry ``model_id``; a ``KeyError`` naming the known ids otherwise."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise KeyError(f"no model '{model_id}' in Marionette's catalog; known: {sorted(MODELS)}") from None


def models_table_markdown() -> str:
    """The README's models table, generated so it never drifts from the catalog."""
    rows = [
        "| File | What it is | Folder | Licence | Get it from |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS.values():
        where = f"`models/{m.folder}/`"
        if m.foreign_dirs:
            where += " (also found in " + ", ".join(f"`custom_nodes/{d}/`" for d in m.foreign_dirs) + ")"
        rows.append(f"| `{m.names[0]}` | {m.title} | {where} | {m.licence} | {m.url} |")
    return "\n".join(rows)
