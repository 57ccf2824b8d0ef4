"""Placeholder: filled by the tracking work."""
NODES = []
