"""Repainting backends: a composite -> one coherent image around the pasted objects.

repainter.py (offline), diffusion_repaint.py (SDXL and SD 1.5 inpainting). May import the
shared models/*.py (scenes among them) and infra; no other family.
"""
