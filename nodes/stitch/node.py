"""Placeholder: filled by the Clip Stitcher work."""
NODES = []
