"""I/O stage: image sequences from the input folder (frames, guidance maps, masks)."""
