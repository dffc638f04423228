"""Personalisation backends: Custom Diffusion training, and generating with a checkpoint.

custom_diffusion.py (the trainable parts and the step), personalised.py (a base pipeline
with a checkpoint loaded, for evaluation). May import the shared models/*.py and infra; no
other family.
"""
