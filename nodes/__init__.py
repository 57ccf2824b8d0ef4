"""Marionette's stages. Each subfolder is one stage: ``node.py`` holds the ComfyUI nodes,
the other modules hold plain torch/numpy algorithms that import no ComfyUI."""
