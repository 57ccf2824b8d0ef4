#!/usr/bin/env bash
# Set up Marionette for the command line and the tests on Debian/Ubuntu: system libraries for
# offscreen OpenGL (EGL on Mesa), a virtual environment in .venv with torch, the pack's
# requirements and the test tools. torch stays pinned by a constraints file so no requirement
# can swap it for another build. Idempotent.
#   TORCH_SPEC   torch requirement to install (default torch==2.13.0)
#   PYTHON       interpreter for the venv (default python3, 3.10+)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > .venv/constraints.txt
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt \
  -c .venv/constraints.txt
echo "Marionette is set up in .venv ($(cat .venv/constraints.txt))"
