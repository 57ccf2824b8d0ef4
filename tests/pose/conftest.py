"""Helpers for the pose tests: stand-ins for onnxruntime sessions with scripted outputs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


class FakeSession:
    """Mimics the part of ``onnxruntime.InferenceSession`` the estimator uses.

    ``fn(batch) -> list of arrays`` computes the outputs; ``outputs`` is a list of
    ``(name, shape)``; ``calls`` records the batch size of every run."""

    def __init__(self, fn, input_name="input", input_shape=(1, 3, 384, 288), outputs=(), dtype="tensor(float)"):
        self.fn = fn
        self._inputs = [SimpleNamespace(name=input_name, shape=list(input_shape), type=dtype)]
        self._outputs = [SimpleNamespace(name=n, shape=list(s)) for n, s in outputs]
        self.calls: list[int] = []

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feed):
        (batch,) = feed.values()
        assert list(feed) == [self._inputs[0].name]
        self.calls.append(len(batch))
        outs = self.fn(batch)
        if names is None:
            return outs
        order = [o.name for o in self._outputs]
        return [outs[order.index(n)] for n in names]


def simcc_peaks(locs_xy: np.ndarray, heights: np.ndarray, wx: int = 576, wy: int = 768, floor: float = -1.0):
    """SimCC arrays ``[1, K, wx]``, ``[1, K, wy]`` whose maxima sit at bins ``locs_xy`` ``[K, 2]``
    with heights ``[K]`` or ``[K, 2]`` (x, y)."""
    k = len(locs_xy)
    heights = np.broadcast_to(np.asarray(heights, np.float32).reshape(k, -1), (k, 2))
    sx = np.full((1, k, wx), floor, np.float32)
    sy = np.full((1, k, wy), floor, np.float32)
    sx[0, np.arange(k), locs_xy[:, 0]] = heights[:, 0]
    sy[0, np.arange(k), locs_xy[:, 1]] = heights[:, 1]
    return sx, sy


def fake_detector(raw=None, batch=1):
    """A detector session returning ``raw`` ``[8400, 85]`` (default: nobody) for every image."""
    raw = np.zeros((8400, 85), np.float32) if raw is None else np.asarray(raw, np.float32)
    return FakeSession(lambda b: [np.repeat(raw[None], len(b), 0)], "images", (batch, 3, 640, 640),
                       [("output", (batch, 8400, 85))])


def fake_pose(bins, heights, names=("simcc_x", "simcc_y"), batch=1, swap=False):
    """A pose session whose SimCC maxima sit at ``bins`` ``[133, 2]`` for every crop; ``swap``
    lists (and returns) simcc_y first."""
    sx, sy = simcc_peaks(np.asarray(bins), heights)

    def fn(batch_in):
        outs = [np.repeat(sx, len(batch_in), 0), np.repeat(sy, len(batch_in), 0)]
        return outs[::-1] if swap else outs

    outputs = list(zip(names, [(batch, 133, 576), (batch, 133, 768)]))
    return FakeSession(fn, "input", (batch, 3, 384, 288), outputs[::-1] if swap else outputs)


@pytest.fixture()
def fakes():
    """``fakes.detector(raw)``, ``fakes.pose(bins, heights, ...)``, ``fakes.simcc(...)``,
    ``fakes.Session``."""
    return SimpleNamespace(Session=FakeSession, detector=fake_detector, pose=fake_pose, simcc=simcc_peaks)
