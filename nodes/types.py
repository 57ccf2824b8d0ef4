"""The custom link types between Marionette's nodes.

Each id is the string ComfyUI matches links by. Payloads:

``POSE_KEYPOINT``
    Exactly comfyui_controlnet_aux's payload, so its nodes and ours link both ways: a list with
    one dict per frame, ``{"people": [person, ...], "canvas_width": W, "canvas_height": H}``,
    each person holding flat ``[x, y, c] * n`` lists in pixels (OpenPose-18 body, 70 face
    points, 21 per hand, plus our ``foot_keypoints_2d`` (6) and ``marionette_confidence``
    (134 raw scores in DWPose order)). Converters to the dense ``[T, P, 134, 3]`` array used
    inside stages live in ``nodes/keypoints.py``.

Later stages add ``BODY_SEQUENCE``, ``BODY_MODEL``, ``POINT_TRACKS``, ``CHAMP_MODEL``,
``GUIDANCE_FEATURES`` and ``STITCHING`` here (see DESIGN.md).
"""

POSE_KEYPOINT = "POSE_KEYPOINT"
