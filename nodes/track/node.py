"""Track stage nodes: two families, each in its own small file (tracking; camera motion and the
background plate), listed here for the pack's stage loader."""
from .camera_node import NODES as CAMERA_NODES
from .tracking_node import NODES as TRACKING_NODES

NODES = [*TRACKING_NODES, *CAMERA_NODES]
