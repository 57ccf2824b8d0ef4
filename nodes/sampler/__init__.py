"""Sampler stage: Champ's models (guidance encoder, 3D denoising UNet with motion modules,
reference attention), the loader of the official release folder, and the animation sampler."""
