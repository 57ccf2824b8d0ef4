"""Sampler stage nodes: load the Champ release, encode guidance maps, animate a reference image.

Thin by design: schema, cheap checks, one call into ``champ_files`` / ``pipeline``. Every module
is brought onto the compute device through the shared cache (``LoadedModel.on_device``, i.e.
ComfyUI's memory manager) right before it is used.
"""
from __future__ import annotations

import torch

from ...models_loader import cache, catalog, files
from ..comfy_bridge import io, progress_callback, to_output_device
from ..types import CHAMP_MODEL, GUIDANCE_FEATURES, STITCHING, ChampModelHandle, GuidanceFeatures
from . import champ_files, pipeline
from .clips import FrameCollector, LatentCollector
from .lazy_guidance import LazyGuidance

ChampModel = io.Custom(CHAMP_MODEL)
Guidance = io.Custom(GUIDANCE_FEATURES)
StitchingType = io.Custom(STITCHING)
CATEGORY = "Marionette/sampler"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NO_RELEASE = "(no Champ release in models/champ)"
# socket name -> Champ's guidance type
MAPS = {"depth": "depth", "normal": "normal", "semantic": "semantic_map", "skeleton": "dwpose"}


def release_options() -> list[str]:
    """Folders under models/champ (and extra paths) that hold a Champ release, as the names
    ``ChampRelease.find`` accepts (``.`` = the champ folder itself)."""
    marker = catalog.model("champ_denoising_unet").names
    found = []
    for base in files.folder_dirs("champ"):
        if not base.is_dir():
            continue
        candidates = [base] + [p for p in sorted(base.glob("*")) + sorted(base.glob("*/*")) if p.is_dir()]
        for folder in candidates:
            if any((folder / n).is_file() for n in marker):
                name = folder.relative_to(base).as_posix() or "."
                if name not in found:
                    found.append(name)
    return found or [NO_RELEASE]


def _auto_dtype(device) -> torch.dtype:
    if cache.comfy_present():
        import comfy.model_management as mm

        return mm.unet_dtype(device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def module_source(handle: ChampModelHandle) -> pipeline.ModuleSource:
    """The pipeline's ``get(name, memory_required)`` over the handle's cache entries."""
    def get(name: str, memory_required: int = 0):
        if name not in handle.components:
            raise ValueError(f"the Champ model has no component '{name}'")
        return handle.components[name].on_device(memory_required)
    return get


class MarionetteLoadChamp(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteLoadChamp",
            display_name="Load Champ",
            category=CATEGORY,
            description="Loads the official Champ release (the Hugging Face repo fudan-generative-ai/champ as "
                        "downloaded, in models/champ): denoising UNet with motion modules, reference UNet, four "
                        "guidance encoders, CLIP image encoder and VAE. Every file is checked key by key.",
            inputs=[
                io.Combo.Input("release", options=release_options(),
                               tooltip="The release folder inside models/champ ('.' when the repository's files sit "
                                       "directly in models/champ)."),
                io.Combo.Input("dtype", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="Weight precision. auto: what ComfyUI picks for this device (fp16 on most "
                                       "GPUs, as the official inference; fp32 on CPU)."),
            ],
            outputs=[ChampModel.Output("champ_model", display_name="champ_model",
                                       tooltip="Handles to the loaded models, for Encode Guidance and Animate.")],
        )

    @classmethod
    def validate_inputs(cls, release, dtype):
        if dtype not in ("auto", *DTYPES):
            return f"dtype must be auto, fp32, fp16 or bf16; got '{dtype}'"
        try:
            champ_files.ChampRelease.find(None if release == NO_RELEASE else release)
        except files.ModelFileMissing as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, release, dtype):
        found = champ_files.ChampRelease.find(None if release == NO_RELEASE else release)
        device = cache.torch_device()
        torch_dtype = _auto_dtype(device) if dtype == "auto" else DTYPES[dtype]
        components = {c: champ_files.load_component(found, c, dtype=torch_dtype, device=device)
                      for c in champ_files.COMPONENTS}
        return io.NodeOutput(ChampModelHandle(release=found, components=components, dtype=torch_dtype))


class MarionetteEncodeGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        maps = []
        for socket, kind in MAPS.items():
            maps.append(io.Image.Input(socket, optional=True,
                                       tooltip=f"The {socket} guidance video (Champ's '{kind}' maps) as IMAGE frames; "
                                               f"leave unconnected to not use it."))
            maps.append(io.Float.Input(f"{socket}_strength", default=1.0, min=0.0, max=4.0, step=0.05,
                                       tooltip=f"Weight of the {socket} features in the sum (official: 1.0). Lower it "
                                               f"to loosen how closely the video follows this map."))
        return io.Schema(
            node_id="MarionetteEncodeGuidance",
            display_name="Encode Guidance",
            category=CATEGORY,
            description="Runs each connected guidance video (depth, normal, semantic, skeleton) through its Champ "
                        "guidance encoder and sums the features, as the official inference does. Maps are resized to "
                        "the animation size like the official code (bicubic) and must all have the same frames.",
            inputs=[
                ChampModel.Input("champ_model", tooltip="From Load Champ."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8,
                             tooltip="Animation width in pixels (multiple of 8); use the same in Animate."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8,
                             tooltip="Animation height in pixels (multiple of 8); use the same in Animate."),
                *maps,
                io.Mask.Input("semantic_mask", optional=True,
                              tooltip="The person's mask for the semantic maps: pixels outside it are set to black "
                                      "before encoding (the official data has a black background)."),
                io.Int.Input("eager_limit_mb", default=1024, min=0, max=1 << 20, optional=True,
                             tooltip="Features up to this size (MB, float32) are encoded now and kept; longer "
                                     "videos are encoded window by window while Animate runs (same values, "
                                     "constant memory). 0: always on demand."),
            ],
            outputs=[Guidance.Output("guidance", display_name="guidance",
                                     tooltip="The summed guidance features for Animate (held, or encoded window by "
                                             "window as Animate needs them when larger than eager_limit_mb).")],
        )

    @classmethod
    def validate_inputs(cls, width, height, **kwargs):
        if width % 8 or height % 8:
            return f"width and height must be multiples of 8; got {width}x{height}"
        return True

    @classmethod
    def execute(cls, champ_model, width, height, depth=None, normal=None, semantic=None, skeleton=None,
                depth_strength=1.0, normal_strength=1.0, semantic_strength=1.0, skeleton_strength=1.0,
                semantic_mask=None, eager_limit_mb=1024):
        given = {"depth": depth, "normal": normal, "semantic": semantic, "skeleton": skeleton}
        strength = {"depth": depth_strength, "normal": normal_strength, "semantic": semantic_strength,
                    "skeleton": skeleton_strength}
        maps = {MAPS[k]: v for k, v in given.items() if v is not None}
        if not maps:
            raise ValueError("Encode Guidance needs at least one guidance video: connect depth, normal, semantic or "
                             "skeleton.")
        counts = {k: int(v.shape[0]) for k, v in given.items() if v is not None}
        if len(set(counts.values())) != 1:
            raise ValueError(f"the guidance videos must have the same number of frames; got {counts}. Trim them to "
                             f"the same length (e.g. with a batch or video-split node).")
        sizes = {k: f"{v.shape[2]}x{v.shape[1]}" for k, v in given.items() if v is not None}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the guidance videos must have the same size; got {sizes}. Render them at one size.")
        if semantic_mask is not None and semantic is None:
            raise ValueError("a semantic_mask was connected without a semantic video")
        strengths = {MAPS[k]: float(strength[k]) for k in given if given[k] is not None}
        frames = next(iter(counts.values()))
        lazy = LazyGuidance(module_source(champ_model), maps, width, height, strengths, semantic_mask)
        out = GuidanceFeatures(features=None, frames=frames, width=width, height=height, maps=tuple(maps),
                               strengths=strengths, source=lazy)
        if lazy.nbytes <= int(eager_limit_mb) * 2**20:
            out.features = pipeline.encode_guidance(module_source(champ_model), maps, width, height,
                                                    strengths=strengths, semantic_mask=semantic_mask,
                                                    progress=progress_callback(len(maps) * -(-frames // 16)))
            out.source = None
        return io.NodeOutput(out)


class MarionetteAnimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MarionetteAnimate",
            display_name="Animate",
            category=CATEGORY,
            description="Animates the reference image along the guidance with Champ's official sampling: DDIM "
                        "(v-prediction, zero-SNR, trailing), classifier-free guidance, reference attention, and "
                        "24-frame windows overlapping by 4 averaged at every step (the last window wraps to the "
                        "start). With a Clip Stitcher in chain mode, long videos are made clip by clip in constant "
                        "memory (the sampler streams frames; this node gathers them into the IMAGE output). With a "
                        "background plate, the background is kept from the plate. Shows a preview every step; "
                        "Cancel stops it.",
            inputs=[
                io.Image.Input("reference", tooltip="The person to animate: one image (the first of a batch is used)."),
                ChampModel.Input("champ_model", tooltip="From Load Champ."),
                Guidance.Input("guidance", tooltip="From Encode Guidance; its frame count is the video length."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Generation width in pixels; 0 uses the size the guidance was encoded for "
                                     "(any other value must match it)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Generation height in pixels; 0 uses the guidance's size."),
                io.Int.Input("steps", default=20, min=1, max=200,
                             tooltip="DDIM steps (official 20). Fewer is faster and blurrier."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale (official 3.5). 1 or less turns guidance off "
                                       "(twice as fast, weaker likeness)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the initial noise (CPU generator): the same seed and inputs give the "
                                     "same video on any machine. The official example uses 42."),
                io.Boolean.Input("resize_to_reference", default=True,
                                 tooltip="Resize the frames back to the reference image's size, as the official "
                                         "inference does; off keeps width x height."),
                StitchingType.Input("stitching", optional=True,
                                    tooltip="From Clip Stitcher: aggregate (official windows averaged every step) "
                                            "or chain (clip by clip, each clip continuing the previous one's last "
                                            "frames; constant memory for long videos; seams and colour matched). "
                                            "Unconnected: the official aggregation, 24-frame windows overlapping "
                                            "by 4."),
                io.Image.Input("background_plate", optional=True,
                               tooltip="A background per frame (from Make Background Plate): kept behind the "
                                       "person. Same frame count as the guidance (or one image); resized to the "
                                       "generation size like the guidance maps. Needs person_mask."),
                io.Mask.Input("person_mask", optional=True,
                              tooltip="The person per frame (e.g. the body render's mask of the aligned driving "
                                      "sequence): inside it the sampler is free, outside it the plate is kept. "
                                      "Grown by one latent cell (8 px) and feathered."),
                io.Mask.Input("plate_valid", optional=True,
                              tooltip="Optional: 1 where the plate is known, 0 where it is a guess (e.g. never "
                                      "seen in the reference); the plate is not enforced where it is 0."),
                io.Float.Input("background_steps", default=0.6, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Share of the steps (the first ones) after which the background is set "
                                       "from the plate; only used with a plate. 1 keeps the plate exactly; lower "
                                       "lets the model harmonise lighting and shadows."),
            ],
            outputs=[
                io.Image.Output("frames", display_name="frames", tooltip="The animation, one IMAGE per frame."),
                io.Latent.Output("latent", display_name="latent",
                                 tooltip="The final latents {'samples': [frames, 4, height/8, width/8]} (SD1.5 latent "
                                         "space) for re-decoding or further processing."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, steps, **kwargs):
        if width % 8 or height % 8:
            return f"width and height must be multiples of 8 (or 0 for the guidance's size); got {width}x{height}"
        return True

    @classmethod
    def execute(cls, reference, champ_model, guidance, width, height, steps, cfg, seed, resize_to_reference=True,
                stitching=None, background_plate=None, person_mask=None, plate_valid=None, background_steps=0.6):
        width, height = width or guidance.width, height or guidance.height
        if (width, height) != (guidance.width, guidance.height):
            raise ValueError(f"Animate is set to {width}x{height} but the guidance was encoded at {guidance.width}x"
                             f"{guidance.height}; set width/height to 0 or encode the guidance at this size.")
        image = reference[0] if reference.ndim == 4 else reference
        background = _background(background_plate, person_mask, plate_valid, background_steps)
        plan, clips = _stitching(stitching, image, guidance.frames)
        frames, latents = FrameCollector(guidance.frames), LatentCollector(guidance.frames)
        features = guidance.features if guidance.features is not None else guidance.source
        pipeline.animate(module_source(champ_model), image, features, width, height, steps=steps,
                         guidance_scale=cfg, seed=seed, resize_to_reference=resize_to_reference,
                         progress=progress_callback(clips * steps), frame_sink=frames, latent_sink=latents,
                         background=background, **plan)
        return io.NodeOutput(to_output_device(frames.result()), {"samples": latents.result()})


def _background(plate, person_mask, plate_valid, fraction):
    """The sampler's ``BackgroundGuide`` for the connected plate, or None."""
    if plate is None:
        if person_mask is not None or plate_valid is not None:
            raise ValueError("person_mask and plate_valid are only used with a background_plate: connect the plate "
                             "(Make Background Plate) or disconnect them.")
        return None
    if person_mask is None:
        raise ValueError("a background_plate needs the person_mask (e.g. the body render's mask of the aligned "
                         "driving sequence); without it the plate would cover the person.")
    return pipeline.BackgroundGuide(plate=plate, person_mask=person_mask, valid=plate_valid, fraction=fraction)


def _stitching(stitching, image, frames: int) -> tuple[dict, int]:
    """``animate``'s stitching arguments and the number of clips. The clip plan, seams and colour
    come from the stitch stage's public module, handed to the sampler as plain callables/objects."""
    if stitching is None:
        return {}, 1
    from ..stitch import stitching as stitch

    plan = stitch.validate(stitching)
    if plan.mode != "chain":
        return {"stitching": plan}, 1
    reference = stitch.ColorReference.from_image(image) if plan.color_match == "reference" else None
    stream = stitch.ClipStream(plan.overlap, blend=plan.blend, reference=reference, strength=plan.color_strength)
    clips = len(stitch.clip_ranges(frames, plan.clip_frames, plan.overlap))
    return {"stitching": plan, "clip_stream": stream}, clips


NODES = [MarionetteLoadChamp, MarionetteEncodeGuidance, MarionetteAnimate]
