"""Scoring backends: judging and measuring images.

judge.py (the filter stage's judges: rules, CLIP), vision.py (CLIP and OWL-ViT), score.py
(CP-CLIP / TI-CLIP per image), metrics.py (bootstrap intervals). May import the shared
models/*.py and infra; no other family.
"""
