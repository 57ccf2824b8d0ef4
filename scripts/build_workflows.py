"""Build the shipped workflows, UI format and API format, from one description each.

    python scripts/build_workflows.py --comfyui /path/to/ComfyUI [NAME ...]

Each graph below names nodes by class, widget values by input name, and links as
``("node", output_index)``. The script starts a real ComfyUI (tests/comfyui/server.py) to read
``/object_info``, so widget order, upload slots, sockets and output names in the UI files are
exactly what the editor expects; tests/comfyui checks them again in the editor itself.
Writes ``workflows/<name>.json`` and ``workflows/api/<name>_api.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")

DWPOSE_MODELS = [
    {"name": "yolox_l.onnx", "url": "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx",
     "directory": "dwpose"},
    {"name": "dw-ll_ucoco_384.onnx", "url": "https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",
     "directory": "dwpose"},
]


def _save_video(src, prefix, fps_link):
    return [
        ("video_" + prefix, "CreateVideo", {"images": src, "fps": fps_link}),
        ("save_" + prefix, "SaveVideo", {"video": ("video_" + prefix, 0), "filename_prefix": f"marionette/{prefix}",
                                         "format": "auto", "codec": "auto"}),
    ]


POSE = {"detector": "yolox_l.onnx", "pose_model": "dw-ll_ucoco_384.onnx", "follow": "largest",
        "max_gap_frames": 8, "draw_body": True, "draw_hands": True, "draw_face": True}

def _maps(folder="marionette_guidance"):
    return [(f"maps_{k}", "MarionetteLoadImageSequence", {"folder": f"{folder}/{k}", "max_frames": 0}, f"{k} maps")
            for k in ("depth", "normal", "semantic_map", "dwpose", "mask")]


def _body_guidance():
    """Driving video + reference image -> DWPose on both -> fit Anny to both -> align -> render: the
    guidance part shared by guidance_from_video and animate_champ."""
    return [
        ("load", "LoadVideo", {"file": "marionette_sample.mp4"}, "Load driving video"),
        ("parts", "GetVideoComponents", {"video": ("load", 0)}),
        ("ref", "LoadImage", {"image": "marionette_reference.png"}, "Load reference image"),
        ("ref_mask", "InvertMask", {"mask": ("ref", 1)}, "Person mask (image alpha)"),
        ("pose", "MarionetteEstimatePose", {"images": ("parts", 0), **POSE}, "Driving pose"),
        ("ref_pose", "MarionetteEstimatePose", {"images": ("ref", 0), **POSE}, "Reference pose"),
        ("body", "MarionetteLoadBodyModel", {"model": "anny", "variant": "neutral", "with_fingers": True}),
        ("fit", "MarionetteFitBody", {"pose_keypoint": ("pose", 0), "body_model": ("body", 0), "person": 0,
                                      "focal_length": "diagonal", "quality": "fast"}, "Fit driving video"),
        ("ref_fit", "MarionetteFitBody", {"pose_keypoint": ("ref_pose", 0), "body_model": ("body", 0),
                                          "masks": ("ref_mask", 0), "person": 0, "focal_length": "diagonal",
                                          "quality": "balanced"}, "Fit reference"),
        ("align", "MarionetteAlignBodyShape", {"reference": ("ref_fit", 0), "driving": ("fit", 0),
                                               "body_model": ("body", 0), "placement": "keep driving camera",
                                               "smooth": 0.0}),
        ("render", "MarionetteRenderBodyGuidance", {"body_sequence": ("align", 0), "width": 0, "height": 0,
                                                    "skeleton_hands": True, "skeleton_face": True}),
    ]


def _champ_from_render():
    """Load Champ + Encode Guidance of the rendered maps (the "render" node of ``_body_guidance``)."""
    return [
        ("champ", "MarionetteLoadChamp", {"release": ".", "dtype": "auto"}),
        ("encode", "MarionetteEncodeGuidance", {
            "champ_model": ("champ", 0), "width": 256, "height": 384,
            "depth": ("render", 0), "normal": ("render", 1), "semantic": ("render", 2),
            "skeleton": ("render", 4), "semantic_mask": ("render", 3)}),
    ]


WORKFLOWS = {
    "pose_from_video": {
        "description": "Driving video -> DWPose keypoints (saved as JSON) and a skeleton video. Put yolox_l.onnx and "
                       "dw-ll_ucoco_384.onnx in models/dwpose (or keep them where comfyui_controlnet_aux put them).",
        "nodes": [
            ("load", "LoadVideo", {"file": "marionette_sample.mp4"}, "Load driving video"),
            ("parts", "GetVideoComponents", {"video": ("load", 0)}),
            ("pose", "MarionetteEstimatePose", {"images": ("parts", 0), **POSE}),
            ("save_pose", "MarionetteSavePoseKeypoints", {"pose_keypoint": ("pose", 0),
                                                          "filename_prefix": "marionette/pose"}),
            *_save_video(("pose", 1), "skeleton", ("parts", 2)),
        ],
    },
    "guidance_from_video": {
        "description": "Reference image + driving video -> DWPose on both -> fit the body (Anny by default) to both -> "
                       "give the driving poses the reference's shape -> render Champ's depth, normal, semantic and "
                       "skeleton guidance videos (+ the fitted bodies as .npz). The reference image's alpha is used "
                       "as its person mask.",
        "nodes": [
            *_body_guidance(),
            ("save_body", "MarionetteSaveBodySequence", {"body_sequence": ("align", 0),
                                                         "filename_prefix": "marionette/body"}),
            *_save_video(("render", 0), "depth", ("parts", 2)),
            *_save_video(("render", 1), "normal", ("parts", 2)),
            *_save_video(("render", 2), "semantic", ("parts", 2)),
            *_save_video(("render", 4), "dwpose", ("parts", 2)),
        ],
    },
    "animate_from_maps": {
        "description": "Reference image + Champ guidance-map folders (depth, normal, semantic_map, dwpose, mask; "
                       "one PNG per frame, as Champ's data) from the input folder -> Load Champ -> Encode Guidance -> "
                       "Animate -> PNG frames and a video. Put the official Champ release (the Hugging Face repo "
                       "fudan-generative-ai/champ as downloaded) in models/champ.",
        "nodes": [
            ("ref", "LoadImage", {"image": "marionette_reference.png"}, "Load reference image"),
            ("champ", "MarionetteLoadChamp", {"release": ".", "dtype": "auto"}),
            *_maps(),
            ("encode", "MarionetteEncodeGuidance", {
                "champ_model": ("champ", 0), "width": 256, "height": 384,
                "depth": ("maps_depth", 0), "normal": ("maps_normal", 0), "semantic": ("maps_semantic_map", 0),
                "skeleton": ("maps_dwpose", 0), "semantic_mask": ("maps_mask", 1)}),
            ("animate", "MarionetteAnimate", {"reference": ("ref", 0), "champ_model": ("champ", 0),
                                              "guidance": ("encode", 0), "width": 0, "height": 0, "steps": 20,
                                              "cfg": 3.5, "seed": 42, "resize_to_reference": False}),
            ("save_frames", "SaveImage", {"images": ("animate", 0), "filename_prefix": "marionette/animate"}),
            ("video_animate", "CreateVideo", {"images": ("animate", 0), "fps": 24.0}),
            ("save_animate", "SaveVideo", {"video": ("video_animate", 0), "filename_prefix": "marionette/animate",
                                           "format": "auto", "codec": "auto"}),
        ],
    },
    "animate_champ": {
        "description": "Reference image + driving video -> the whole guidance pipeline (DWPose on both, fit Anny to "
                       "both, the driving poses with the reference's body shape, Champ's depth/normal/semantic/"
                       "skeleton maps) -> Load Champ -> Encode Guidance -> Animate -> video. Put the official Champ "
                       "release in models/champ and the DWPose ONNX files in models/dwpose. Encode Guidance's "
                       "width/height set the generation size (multiples of 8; official 512x512).",
        "nodes": [
            *_body_guidance(),
            *_champ_from_render(),
            ("animate", "MarionetteAnimate", {"reference": ("ref", 0), "champ_model": ("champ", 0),
                                              "guidance": ("encode", 0), "width": 0, "height": 0, "steps": 20,
                                              "cfg": 3.5, "seed": 42, "resize_to_reference": False}),
            *_save_video(("animate", 0), "animation", ("parts", 2)),
        ],
    },
    "animate_moving_background": {
        "description": "Reference image + driving video -> the guidance pipeline -> CoTracker points on the driving "
                       "video's background (outside the driving person's body mask) -> the camera's motion -> the "
                       "reference's background (inpainted behind the person) moved the same way -> Animate keeps the "
                       "generated background on that plate, so the background follows the driving camera. Needs "
                       "CoTracker (code in models/cotracker/co-tracker, scaled_offline.pth in models/cotracker), "
                       "the Champ release and the DWPose files.",
        "nodes": [
            *_body_guidance(),
            ("render_driving", "MarionetteRenderBodyGuidance", {"body_sequence": ("fit", 0), "width": 0, "height": 0,
                                                                "skeleton_hands": False, "skeleton_face": False},
             "Driving person mask"),
            ("track", "MarionetteTrackBackground", {"images": ("parts", 0), "person_mask": ("render_driving", 3),
                                                    "model": "offline", "points": 256, "mask_dilation": 16,
                                                    "chunk_frames": 60, "tracking_long_side": 512}),
            ("camera", "MarionetteEstimateCameraMotion", {"point_tracks": ("track", 0)}),
            ("plate", "MarionetteMakeBackgroundPlate", {"reference_image": ("ref", 0), "reference_mask": ("ref_mask", 0),
                                                        "camera_motion": ("camera", 0), "width": 256, "height": 384}),
            *_champ_from_render(),
            ("animate", "MarionetteAnimate", {"reference": ("ref", 0), "champ_model": ("champ", 0),
                                              "guidance": ("encode", 0), "width": 0, "height": 0, "steps": 20,
                                              "cfg": 3.5, "seed": 42, "resize_to_reference": False,
                                              "background_plate": ("plate", 0), "person_mask": ("render", 3),
                                              "plate_valid": ("plate", 1), "background_steps": 0.6}),
            *_save_video(("animate", 0), "animation", ("parts", 2)),
            ("draw_tracks", "MarionetteDrawTracks", {"point_tracks": ("track", 0), "images": ("parts", 0)}),
            *_save_video(("draw_tracks", 0), "tracks", ("parts", 2)),
        ],
    },
    "animate_long": {
        "description": "A long driving video, generated clip by clip with first-frame chaining (each clip starts "
                       "from the previous clip's last frames, the reference features kept in every clip, seams "
                       "blended, colours matched to the reference): memory stays that of one clip however long the "
                       "video. Otherwise the same graph as animate_champ.",
        "nodes": [
            *_body_guidance(),
            *_champ_from_render(),
            ("stitch", "MarionetteClipStitcher", {"mode": "chain", "clip_frames": 24, "overlap": 4, "blend": "linear",
                                                  "color_match": "reference", "color_strength": 1.0}),
            ("animate", "MarionetteAnimate", {"reference": ("ref", 0), "champ_model": ("champ", 0),
                                              "guidance": ("encode", 0), "width": 0, "height": 0, "steps": 20,
                                              "cfg": 3.5, "seed": 42, "resize_to_reference": False,
                                              "stitching": ("stitch", 0)}),
            *_save_video(("animate", 0), "animation", ("parts", 2)),
        ],
    },
    "fit_keypoints": {
        "description": "A keypoints JSON file from the input folder -> fit the body (Anny by default) -> save the "
                       "fitted bodies as .npz in the output folder. Connect person masks (one per frame) to Fit Body "
                       "Model's masks input for a better body shape.",
        "nodes": [
            ("kp", "MarionetteLoadPoseKeypoints", {"file": "marionette_sample_pose.json"}),
            ("body", "MarionetteLoadBodyModel", {"model": "anny", "variant": "neutral", "with_fingers": True}),
            ("fit", "MarionetteFitBody", {"pose_keypoint": ("kp", 0), "body_model": ("body", 0), "person": 0,
                                          "focal_length": "diagonal", "quality": "fast"}),
            ("save_body", "MarionetteSaveBodySequence", {"body_sequence": ("fit", 0),
                                                         "filename_prefix": "marionette/fit"}),
        ],
    },
}


def _spec(info: dict):
    """(name, type, options, optional) of every input in the order the editor lays them out."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {s: list((inputs.get(s) or {}).keys()) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = (inputs.get(section) or {}).get(name)
            if spec:
                kind = spec[0]
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                yield name, ("COMBO" if isinstance(kind, list) else kind), opts, section == "optional"


def build(name: str, graph: dict, object_info: dict) -> tuple[dict, dict]:
    nodes = graph["nodes"]
    ids = {key: i + 1 for i, (key, *_rest) in enumerate(nodes)}
    api, ui_nodes, links = {}, [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    # Columns by dependency depth, rows in order: a readable left-to-right layout.
    depth: dict[str, int] = {}
    for key, cls, values, *rest in nodes:
        deps = [v[0] for v in values.values() if isinstance(v, tuple)]
        depth[key] = 1 + max((depth[d] for d in deps), default=-1)
    column_y: dict[int, int] = {}
    for key, cls, values, *rest in nodes:
        if cls not in object_info:
            raise SystemExit(f"{name}: node class {cls} is not in /object_info (is the pack loaded?)")
        info = object_info[cls]
        nid = ids[key]
        title = rest[0] if rest else None
        # The editor lists plain sockets first, then widgets turned into sockets by a link.
        api_inputs, ui_inputs, widget_links, widgets = {}, [], [], []
        known = set()
        for inp, kind, opts, optional in _spec(info):
            known.add(inp)
            value = values.get(inp)
            is_widget = kind in WIDGET_TYPES and not opts.get("forceInput")
            if isinstance(value, tuple):
                src, slot = ids[value[0]], value[1]
                link_id = len(links) + 1
                src_type = object_info[nodes[src - 1][1]]["output"][slot]
                links.append([link_id, src, slot, nid, None, src_type])
                out_links.setdefault((src, slot), []).append(link_id)
                api_inputs[inp] = [str(src), slot]
                entry = {"name": inp, "type": kind, "link": link_id}
                if is_widget:
                    entry["widget"] = {"name": inp}
                if optional:
                    entry["shape"] = 7
                (widget_links if is_widget else ui_inputs).append(entry)
                if is_widget:
                    widgets.append(opts.get("default"))
            elif is_widget:
                if value is None:
                    value = opts.get("default")
                    if value is None and kind == "COMBO":
                        value = (opts.get("options") or info["input"].get("required", {}).get(inp, [[None]])[0])[0]
                else:
                    api_inputs[inp] = value
                if inp not in api_inputs and value is not None:
                    api_inputs[inp] = value
                widgets.append(value)
                if opts.get("control_after_generate") or (kind == "INT" and inp in ("seed", "noise_seed")):
                    widgets.append("fixed")
                if any(opts.get(f) for f in UPLOAD_FLAGS):
                    widgets.append("image")
            else:
                ui_inputs.append({"name": inp, "type": kind, "link": None, **({"shape": 7} if optional else {})})
        unknown = set(values) - known
        if unknown:
            raise SystemExit(f"{name}: {cls} has no inputs {sorted(unknown)}")
        ui_inputs += widget_links
        # Links carry the target slot = the index among the node's UI inputs.
        for slot, entry in enumerate(ui_inputs):
            if entry.get("link"):
                links[entry["link"] - 1][4] = slot
        api[str(nid)] = {"class_type": cls, "inputs": api_inputs, "_meta": {"title": title or info["display_name"]}}
        col = depth[key]
        # Stack nodes in their column by an estimate of their drawn height (sockets + widgets,
        # plus the preview of loaders), so nothing overlaps in the editor.
        n_out = len(info["output"])
        height = 40 + 24 * (max(len(ui_inputs), n_out) + len(widgets)) + (320 if cls in ("LoadImage", "LoadVideo") else 0)
        y = column_y.get(col, 80)
        column_y[col] = y + height + 40
        props = {"Node name for S&R": cls}
        if cls == "MarionetteEstimatePose":
            props["models"] = DWPOSE_MODELS
        node = {"id": nid, "type": cls, "pos": [60 + 400 * col, y], "size": [340, height], "flags": {},
                "order": nid - 1, "mode": 0, "inputs": ui_inputs, "outputs": [], "properties": props,
                "widgets_values": widgets}
        if title:
            node["title"] = title
        ui_nodes.append(node)
    for node in ui_nodes:
        info = object_info[node["type"]]
        names = info.get("output_name") or info["output"]
        node["outputs"] = [{"name": names[i], "type": t, "links": out_links.get((node["id"], i)), "slot_index": i}
                           for i, t in enumerate(info["output"])]
    ui = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "marionette/" + name)), "revision": 0,
          "last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
          "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [0, 0]},
                                                "marionette": {"description": graph["description"]}},
          "version": 0.4}
    return ui, api


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, help="a ComfyUI checkout")
    parser.add_argument("names", nargs="*", help="workflows to build (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
    import server as harness

    with harness.ComfyServer(args.comfyui) as srv:
        object_info = srv.object_info()
    for name in args.names or WORKFLOWS:
        ui, api = build(name, WORKFLOWS[name], object_info)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (ROOT / "workflows" / "api").mkdir(exist_ok=True)
        (ROOT / "workflows" / "api" / f"{name}_api.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}_api.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
