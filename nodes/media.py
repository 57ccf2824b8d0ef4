"""Reading and writing frames outside ComfyUI (command line, benchmarks, tests): videos through
PyAV (which bundles FFmpeg, so nobody hunts for an ffmpeg binary) and image folders through
Pillow. Inside ComfyUI the workflows use core's LoadVideo / SaveVideo instead.

Frames are float32 ``[T, H, W, 3]`` in 0..1, RGB — the IMAGE convention.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def to_uint8(frames) -> np.ndarray:
    """IMAGE-like frames (torch or numpy, 0..1) → uint8 ``[T, H, W, 3]``."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(frames, path: str | os.PathLike, fps: float = 24.0, crf: int = 18) -> Path:
    """Write ``frames`` as an H.264 MP4 (yuv420p, so every player opens it). Odd sizes are
    padded by one pixel because yuv420p needs even width and height."""
    import av

    data = to_uint8(frames)
    if data.ndim != 4 or data.shape[-1] != 3 or len(data) == 0:
        raise ValueError(f"write_video needs frames shaped [T, H, W, 3] with T > 0, got {tuple(data.shape)}")
    t, h, w, _ = data.shape
    if h % 2 or w % 2:
        data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = data.shape[1:3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames (float32 ``[T, H, W, 3]`` in 0..1) and frame rate of a video file."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 24)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path} could not be decoded as a video: {exc}") from exc
    if not frames:
        raise ValueError(f"{path} contains no frames: an empty or broken video")
    return np.stack(frames).astype(np.float32) / 255.0, fps


def read_images(folder: str | os.PathLike) -> np.ndarray:
    """All images of ``folder`` sorted by file name, as one IMAGE batch (sizes must agree)."""
    return read_image_folder(folder)[0]


def read_image_folder(folder: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``folder`` sorted by file name: RGB float32 ``[T,H,W,3]`` and a mask float32
    ``[T,H,W]`` (alpha when the images have one, else brightness), both in 0..1."""
    from PIL import Image

    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    paths = paths[:max_frames] if max_frames else paths
    rgb, masks, sizes = [], [], {}
    for p in paths:
        with Image.open(p) as im:
            sizes.setdefault(im.size, p.name)
            rgb.append(np.asarray(im.convert("RGB")))
            has_alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
            masks.append(np.asarray(im.convert("RGBA"))[..., 3] if has_alpha else np.asarray(im.convert("L")))
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h} ({name})" for (w, h), name in sizes.items())
        raise ValueError(f"images in {folder} have different sizes: {listed}; resize them to one size")
    return np.stack(rgb).astype(np.float32) / 255.0, np.stack(masks).astype(np.float32) / 255.0
