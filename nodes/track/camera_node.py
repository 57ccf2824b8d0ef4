"""Placeholder: filled by the camera-motion work."""
NODES = []
