"""Segmentation backends: a photo -> a soft mask of its object.

segmenter.py (offline, classical), sam.py (Segment Anything), isnet.py (IS-Net, ONNX),
weights.py (fetching IS-Net's weights; what `auto` resolves to). May import the shared
models/*.py and infra; no other family.
"""
