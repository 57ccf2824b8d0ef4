"""Render stage: Champ guidance maps (depth, normal, semantic, mask) and skeletons from fitted bodies."""
