"""OpenGL backend: one offscreen EGL pass per frame through pyrender's EGL platform code.

pyrender's own renderer is not used for drawing: it always draws into a 4x multisampled 8-bit
framebuffer, which would blend silhouettes (a non-binary mask, normals mixed with black) and
quantise normals and linear colours before they are normalised and encoded. Instead one small
shader pair writes, per pixel, the interpolated normal and camera depth and the interpolated
linear colour into two float32 colour attachments of a single-sample framebuffer; the encoding
is then exactly the torch backend's (``maps.encode_surface``).

Geometry matches ``raster.py``: same pinhole (pixel centres at integers, i.e. GL window
coordinate ``u + 0.5``), faces with a vertex nearer than the clip start dropped before drawing,
the same back-face culling on closed meshes, and normals flipped toward the viewer on back faces.

The EGL context is made once per thread and kept (a new one costs about half a second).
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from .geometry import NEAR_CLIP

_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec3 color;
uniform mat4 P;
out vec3 v_normal;
out vec3 v_color;
out float v_z;
void main() {
    gl_Position = P * vec4(position, 1.0);
    v_normal = normal;
    v_color = color;
    v_z = position.z;
}
"""

_FRAGMENT_SHADER = """
#version 330 core
in vec3 v_normal;
in vec3 v_color;
in float v_z;
layout(location = 0) out vec4 out_nz;
layout(location = 1) out vec4 out_color;
void main() {
    // glFrontFace(GL_CW) below makes gl_FrontFacing mean "normal toward the camera".
    out_nz = vec4(gl_FrontFacing ? v_normal : -v_normal, v_z);
    out_color = vec4(v_color, 1.0);
}
"""

_local = threading.local()


def _gl():
    """Import PyOpenGL on EGL (set ``PYOPENGL_PLATFORM=egl`` unless the user chose one)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from OpenGL import GL
    return GL


class _Context:
    """One EGL context with the program and buffers, current on the thread that made it."""

    def __init__(self):
        GL = _gl()
        from pyrender.platforms.egl import EGLPlatform  # noqa: lazy, heavy import

        self.platform = EGLPlatform(1, 1)
        self.platform.init_context()
        self.platform.make_current()
        self.program = _link(GL, _VERTEX_SHADER, _FRAGMENT_SHADER)
        self.u_proj = GL.glGetUniformLocation(self.program, "P")
        self.vao = GL.glGenVertexArrays(1)
        GL.glBindVertexArray(self.vao)
        self.vbo_pos, self.vbo_nrm, self.vbo_col, self.ibo = GL.glGenBuffers(4)
        for loc, vbo in enumerate((self.vbo_pos, self.vbo_nrm, self.vbo_col)):
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, vbo)
            GL.glBufferData(GL.GL_ARRAY_BUFFER, 12, None, GL.GL_DYNAMIC_DRAW)
            GL.glEnableVertexAttribArray(loc)
            GL.glVertexAttribPointer(loc, 3, GL.GL_FLOAT, GL.GL_FALSE, 0, ctypes.c_void_p(0))
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ibo)
        self.fbo = None
        self.size = (0, 0)

    def framebuffer(self, width: int, height: int) -> None:
        """A single-sample framebuffer: two RGBA32F colour attachments and a float depth buffer."""
        GL = _gl()
        if self.size == (width, height):
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
            return
        if self.fbo is not None:
            GL.glDeleteFramebuffers(1, [self.fbo])
            GL.glDeleteRenderbuffers(3, self.rbos)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        self.rbos = list(GL.glGenRenderbuffers(3))
        formats = (GL.GL_RGBA32F, GL.GL_RGBA32F, GL.GL_DEPTH_COMPONENT32F)
        points = (GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1, GL.GL_DEPTH_ATTACHMENT)
        for rbo, fmt, point in zip(self.rbos, formats, points):
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, rbo)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, fmt, width, height)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, point, GL.GL_RENDERBUFFER, rbo)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"OpenGL framebuffer incomplete (status {status:#x}).")
        GL.glDrawBuffers(2, [GL.GL_COLOR_ATTACHMENT0, GL.GL_COLOR_ATTACHMENT1])
        self.size = (width, height)


def _link(GL, vs: str, fs: str) -> int:
    from OpenGL.GL import shaders
    return shaders.compileProgram(shaders.compileShader(vs, GL.GL_VERTEX_SHADER),
                                  shaders.compileShader(fs, GL.GL_FRAGMENT_SHADER))


def _context() -> _Context:
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        ctx = _Context()
        _local.ctx = ctx
    return ctx


def projection(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """``[4, 4]`` clip matrix for OpenCV camera points: window ``x = u + 0.5``, ``y = v + 0.5``
    (image row 0 at window row 0, so ``glReadPixels`` returns rows top-down), ``w = z``, and
    GL depth mapping ``near .. far`` to ``-1 .. 1``."""
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    return np.array([
        [2 * fx / width, 2 * s / width, 2 * (cx + 0.5) / width - 1, 0],
        [0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0],
        [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, 1, 0],
    ], dtype=np.float32)


class GLRenderer:
    """Draws one frame's visible surface at every pixel of a ``width x height`` image.

    Raises on construction when EGL or PyOpenGL/pyrender are unavailable (callers fall back).
    """

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        self.ctx = _context()
        self.ctx.platform.make_current()
        self.ctx.framebuffer(self.width, self.height)
        self.faces = np.zeros((0, 3), np.uint32)
        self.cull = 0
        self.has_color = False
        self._uploaded = None

    def set_mesh(self, faces: np.ndarray, colors: np.ndarray | None, cull: int) -> None:
        """faces ``[F, 3]``; colors ``[V, 3]`` linear RGB or ``None``; cull as in ``raster``."""
        GL = _gl()
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self.cull = cull
        self.has_color = colors is not None
        self._uploaded = None
        if colors is not None:
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.ctx.vbo_col)
            GL.glBufferData(GL.GL_ARRAY_BUFFER, np.ascontiguousarray(colors, np.float32), GL.GL_STATIC_DRAW)
            GL.glEnableVertexAttribArray(2)
        else:
            GL.glDisableVertexAttribArray(2)
            GL.glVertexAttrib3f(2, 0.0, 0.0, 0.0)

    def render(self, verts: np.ndarray, normals: np.ndarray | None, K: np.ndarray) -> dict[str, np.ndarray]:
        """verts/normals ``[V, 3]`` float32 (OpenCV camera); K ``[3, 3]``.

        Returns covered pixels only: ``pix [P]`` int64 (``row * width + col``, ascending),
        ``z [P]`` metres, ``normal [P, 3]`` (interpolated, toward the viewer; when ``normals``
        is given) and ``color [P, 3]`` (interpolated linear RGB; when colours were set).
        """
        GL = _gl()
        W, H = self.width, self.height
        self.ctx.platform.make_current()
        self.ctx.framebuffer(W, H)
        z = verts[:, 2]
        ok = (z[self.faces] >= NEAR_CLIP).all(1)
        faces = self.faces if ok.all() else self.faces[ok]
        if faces.size == 0:
            empty = np.zeros(0, np.float32)
            out = {"pix": np.zeros(0, np.int64), "z": empty}
            if normals is not None:
                out["normal"] = np.zeros((0, 3), np.float32)
            if self.has_color:
                out["color"] = np.zeros((0, 3), np.float32)
            return out
        if faces is not self._uploaded:
            GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ctx.ibo)
            GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, faces, GL.GL_DYNAMIC_DRAW)
            self._uploaded = faces
        used = z[faces]
        zmin, zmax = float(used.min()), float(used.max())
        # Tight near/far planes: nothing kept gets clipped, and the depth test stays precise.
        near, far = 0.5 * zmin, 2.0 * zmax + 1.0

        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.ctx.vbo_pos)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, np.ascontiguousarray(verts, np.float32), GL.GL_STREAM_DRAW)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.ctx.vbo_nrm)
        nrm = normals if normals is not None else np.zeros_like(verts)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, np.ascontiguousarray(nrm, np.float32), GL.GL_STREAM_DRAW)

        GL.glViewport(0, 0, W, H)
        GL.glUseProgram(self.ctx.program)
        GL.glUniformMatrix4fv(self.ctx.u_proj, 1, GL.GL_TRUE, projection(K, W, H, near, far))
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_MULTISAMPLE)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthFunc(GL.GL_LESS)
        # Image rows map to window rows unflipped, which mirrors the winding: a face whose normal
        # points at the camera appears clockwise in window coordinates.
        GL.glFrontFace(GL.GL_CW)
        if self.cull:
            GL.glEnable(GL.GL_CULL_FACE)
            GL.glCullFace(GL.GL_BACK if self.cull > 0 else GL.GL_FRONT)
        else:
            GL.glDisable(GL.GL_CULL_FACE)
        GL.glClearColor(0.0, 0.0, 0.0, 0.0)
        GL.glClearDepth(1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glBindVertexArray(self.ctx.vao)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ctx.ibo)
        GL.glDrawElements(GL.GL_TRIANGLES, int(faces.size), GL.GL_UNSIGNED_INT, ctypes.c_void_p(0))

        nz = _read(GL, GL.GL_COLOR_ATTACHMENT0, W, H)
        pix = np.flatnonzero(nz[:, 3] > 0)  # cleared to z = 0; covered pixels have z >= near
        out = {"pix": pix.astype(np.int64), "z": np.ascontiguousarray(nz[pix, 3])}
        if normals is not None:
            out["normal"] = np.ascontiguousarray(nz[pix, :3])
        if self.has_color:
            col = _read(GL, GL.GL_COLOR_ATTACHMENT1, W, H)
            out["color"] = np.ascontiguousarray(col[pix, :3])
        return out


def _read(GL, attachment, W: int, H: int) -> np.ndarray:
    """``[H * W, 4]`` float32 of one colour attachment, rows top-down (see ``projection``)."""
    GL.glReadBuffer(attachment)
    GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 4)
    data = GL.glReadPixels(0, 0, W, H, GL.GL_RGBA, GL.GL_FLOAT)
    return np.frombuffer(data, dtype=np.float32).reshape(H * W, 4)
