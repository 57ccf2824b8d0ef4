"""Body stage: parametric body models, fitting to keypoints (and masks), shape alignment."""
