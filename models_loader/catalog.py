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
        kind: ``"onnx"``, ``"state_dict"``, ``"body_model"`` (an SMPL-family ``.pkl``/``.npz``
            read by ``files.load_pickle_arrays`` / ``files.load_npz_arrays``) or ``"config"``
            (a JSON file). Names may be paths inside a published folder
            (``champ/denoising_unet.pth``); ``files.find_dir`` finds that folder.
        layout: the published layout in words (shown in errors and the README).
        licence: licence of the weights.
        url: where users download it.
        onnx_inputs / onnx_outputs: the official export's signature, checked on load so a
            wrong file gives a clear error instead of a shape traceback.
        foreign_dirs: folders of other packs (relative to a ``custom_nodes`` folder) that
            keep the same file, so nobody downloads it twice.
        hf_repo: Hugging Face repo id, to find the file in the local HF hub cache.
        torch_hub_checkpoint: also look in torch.hub's ``checkpoints`` folder, where
            ``torch.hub.load_state_dict_from_url`` saves the file.
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
    torch_hub_checkpoint: bool = False


ONNX_EXT = (".onnx",)
BODY_EXT = (".pkl", ".npz")
CHAMP_EXT = (".pth", ".safetensors", ".bin", ".json")
COTRACKER_EXT = (".pth", ".pt", ".safetensors")

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
        Folder(
            key="smpl",
            extensions=BODY_EXT,
            description="SMPL body model files (.pkl as published, or .npz conversions)",
        ),
        Folder(
            key="smplx",
            extensions=BODY_EXT,
            description="SMPL-X body model files (.npz or .pkl as published)",
        ),
        Folder(
            key="champ",
            extensions=CHAMP_EXT,
            description="the Champ release folder, as downloaded from Hugging Face (fudan-generative-ai/champ)",
        ),
        Folder(
            key="cotracker",
            extensions=COTRACKER_EXT,
            description="CoTracker3 checkpoints (scaled_offline.pth, scaled_online.pth) and, in co-tracker/, "
            "a clone of its code",
        ),
    )
}

# comfyui_controlnet_aux downloads into <its folder>/ckpts/<hf repo id>/...
_CONTROLNET_AUX = "comfyui_controlnet_aux/ckpts/yzd-v/DWPose"

_SMPL_LICENCE = "SMPL Model License (MPI, non-commercial; registration required; never bundled)"
_SMPLX_LICENCE = "SMPL-X Model License (MPI, non-commercial; registration required; never bundled)"
# The files' own names in the official downloads, then the renamed copies most tools expect.
_SMPL_NAMES = {
    "neutral": ("basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "SMPL_NEUTRAL.pkl", "SMPL_NEUTRAL.npz",
                "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"),
    "male": ("basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "SMPL_MALE.pkl", "SMPL_MALE.npz",
             "basicModel_m_lbs_10_207_0_v1.0.0.pkl"),
    "female": ("basicmodel_f_lbs_10_207_0_v1.1.0.pkl", "SMPL_FEMALE.pkl", "SMPL_FEMALE.npz",
               "basicModel_f_lbs_10_207_0_v1.0.0.pkl"),
}


def _smpl_entries() -> tuple[ModelFile, ...]:
    out = []
    for gender, names in _SMPL_NAMES.items():
        out.append(ModelFile(
            id=f"smpl_{gender}",
            title=f"SMPL body model ({gender})",
            folder="smpl",
            names=names,
            kind="body_model",
            layout="pickled dict (chumpy arrays allowed) or .npz: v_template [6890,3], shapedirs "
            "[6890,3,10 or 300], posedirs [6890,3,207], J_regressor [24,6890] (scipy sparse or "
            "dense), weights [6890,24], kintree_table [2,24], f [13776,3]",
            licence=_SMPL_LICENCE,
            url="https://smpl.is.tue.mpg.de",
            notes="SMPL_python_v.1.1.0.zip → smpl/models/; 1.0.0 neutral from smplify.is.tue.mpg.de",
        ))
    for gender in _SMPL_NAMES:
        upper = gender.upper()
        out.append(ModelFile(
            id=f"smplx_{gender}",
            title=f"SMPL-X body model ({gender})",
            folder="smplx",
            names=(f"SMPLX_{upper}.npz", f"SMPLX_{upper}.pkl"),
            kind="body_model",
            layout=".npz or pickled dict: v_template [10475,3], shapedirs [10475,3,20 or 400], "
            "posedirs [10475,3,486], J_regressor [55,10475], weights [10475,55], kintree_table "
            "[2,55], f [20908,3], lmk_faces_idx [51], lmk_bary_coords [51,3], "
            "dynamic_lmk_faces_idx [79,17], dynamic_lmk_bary_coords [79,17,3]",
            licence=_SMPLX_LICENCE,
            url="https://smpl-x.is.tue.mpg.de",
            notes="models_smplx_v1_1.zip → models/smplx/",
        ))
    return tuple(out)


# The Champ release (https://huggingface.co/fudan-generative-ai/champ) is one folder, dropped into
# models/champ/ as downloaded; every name below is a path inside it. Each .pth may also be a
# .safetensors conversion with the same stem (fp32, fp16 or bf16).
CHAMP_REPO = "fudan-generative-ai/champ"
_CHAMP_URL = f"https://huggingface.co/{CHAMP_REPO}"
_CHAMP_LICENCE = "Apache-2.0 (Champ weights, as tagged on Hugging Face)"
CHAMP_GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")


def _champ_weights(stem: str) -> tuple[str, ...]:
    return (f"champ/{stem}.pth", f"champ/{stem}.safetensors")


def _champ_entries() -> tuple[ModelFile, ...]:
    common = dict(folder="champ", url=_CHAMP_URL, hf_repo=CHAMP_REPO,
                  notes="part of the Champ release folder: put the whole download in models/champ/")
    out = [
        ModelFile(id="champ_denoising_unet", title="Champ denoising UNet", names=_champ_weights("denoising_unet"),
                  kind="state_dict", licence=_CHAMP_LICENCE, size_hint_mb=3300,
                  layout="state dict of the inflated SD1.5 3D UNet without motion modules (diffusers UNet "
                  "key names: conv_in, time_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_out)",
                  **common),
        ModelFile(id="champ_reference_unet", title="Champ reference UNet", names=_champ_weights("reference_unet"),
                  kind="state_dict", licence=_CHAMP_LICENCE, size_hint_mb=3300,
                  layout="state dict of the 2D SD1.5 UNet (diffusers key names) without conv_norm_out/conv_out",
                  **common),
        ModelFile(id="champ_motion_module", title="Champ motion module", names=_champ_weights("motion_module"),
                  kind="state_dict", licence=_CHAMP_LICENCE, size_hint_mb=1820,
                  layout="only the 21 AnimateDiff-v2 motion modules of the denoising UNet "
                  "(<block>.motion_modules.<i>.temporal_transformer.*, position encoding of 32 frames)",
                  **common),
    ]
    for kind in CHAMP_GUIDANCE_TYPES:
        out.append(ModelFile(
            id=f"champ_guidance_encoder_{kind}", title=f"Champ guidance encoder ({kind})",
            names=_champ_weights(f"guidance_encoder_{kind}"), kind="state_dict", licence=_CHAMP_LICENCE,
            size_hint_mb=13, layout="GuidanceEncoder state dict: conv_in, blocks.0-5, attentions.0-5, "
            "guidance_attention, conv_out (3 -> 320 channels, 1/8 size)", **common))
    out += [
        ModelFile(id="champ_sd15_unet_config", title="Stable Diffusion 1.5 UNet config (Champ release)",
                  names=("stable-diffusion-v1-5/unet/config.json",), kind="config",
                  licence="CreativeML OpenRAIL-M (Stable Diffusion 1.5; only the config is used)",
                  layout="diffusers UNet2DConditionModel config.json; its weights are not needed", **common),
        ModelFile(id="champ_image_encoder", title="CLIP image encoder (Champ release)",
                  names=("image_encoder/pytorch_model.bin", "image_encoder/model.safetensors"), kind="state_dict",
                  licence="MIT (OpenAI CLIP ViT-L/14, via lambdalabs/sd-image-variations-diffusers)",
                  size_hint_mb=1200, layout="transformers CLIPVisionModelWithProjection: config.json + weights, "
                  "projection_dim 768", **common),
        ModelFile(id="champ_vae", title="SD VAE ft-MSE (Champ release)",
                  names=("sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
                         "sd-vae-ft-mse/diffusion_pytorch_model.bin"),
                  kind="state_dict", licence="MIT (stabilityai/sd-vae-ft-mse)", size_hint_mb=330,
                  layout="diffusers AutoencoderKL: config.json + weights (latent scale 0.18215)", **common),
    ]
    return tuple(out)


# CoTracker3 (https://github.com/facebookresearch/co-tracker): the code comes from a local clone used
# through torch.hub (``HUB_REPOS``), the weights are the two published checkpoints.
_COTRACKER_LICENCE = "CC-BY-NC 4.0 (Meta CoTracker3; non-commercial, code under the same licence)"
_COTRACKER_URL = "https://huggingface.co/facebook/cotracker3/resolve/main"


def _cotracker_entries() -> tuple[ModelFile, ...]:
    out = []
    for mode, window in (("offline", 60), ("online", 16)):
        out.append(ModelFile(
            id=f"cotracker3_{mode}", title=f"CoTracker3 {mode} checkpoint", folder="cotracker",
            names=(f"scaled_{mode}.pth",), kind="state_dict", licence=_COTRACKER_LICENCE,
            url=f"{_COTRACKER_URL}/scaled_{mode}.pth", hf_repo="facebook/cotracker3", size_hint_mb=97,
            torch_hub_checkpoint=True,
            layout=f"state dict of CoTrackerThree{mode.capitalize()} (fnet, updateformer, corr_mlp, "
            f"time_emb [1,{window},1110]; 25.4 M parameters), loaded into the hub predictor's .model",
            notes="needs the co-tracker code too (HUB_REPOS['cotracker'])"))
    return tuple(out)


@dataclass(frozen=True)
class HubRepo:
    """Model code published as a torch.hub repository, used from a local copy, never fetched.

    Found (``files.find_hub_repo``) at an explicit folder, the folder in ``env_var``,
    ``models/<folder>/<dir_name>`` (a clone the user placed there), then torch.hub's own cache
    (``<hub dir>/<owner>_<name>_<branch>``). A folder qualifies when it holds ``hubconf.py``.
    """

    id: str
    title: str
    folder: str
    dir_name: str
    hub_repo: str
    url: str
    licence: str
    entry_points: tuple[str, ...]
    env_var: str = ""
    tested_commit: str = ""


HUB_REPOS: dict[str, HubRepo] = {
    "cotracker": HubRepo(
        id="cotracker", title="CoTracker code (torch.hub repository)", folder="cotracker", dir_name="co-tracker",
        hub_repo="facebookresearch/co-tracker", url="https://github.com/facebookresearch/co-tracker",
        licence="CC-BY-NC 4.0 (Meta; non-commercial)", entry_points=("cotracker3_offline", "cotracker3_online"),
        env_var="MARIONETTE_COTRACKER_HUB", tested_commit="82e02e8"),
}


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
        *_smpl_entries(),
        *_champ_entries(),
        *_cotracker_entries(),
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
    for r in HUB_REPOS.values():
        rows.append(f"| `{r.dir_name}/` (git clone) | {r.title} | `models/{r.folder}/{r.dir_name}/` | {r.licence} | "
                    f"{r.url} |")
    return "\n".join(rows)
