"""Knows every model file (catalog), finds and loads it safely (files), and owns every loaded
model (cache)."""
