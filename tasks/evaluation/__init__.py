"""Evaluation: a checkpoint + held-out prompts -> images, scores, results.json.

prompts.py (prompt sets, read from YAML and checked), sample.py (generating the images),
summarise.py (CP-CLIP / TI-CLIP, bootstrap intervals, the artifacts). May import views
(thumbnails), the stage layer, models and infra; not the stages or training.
"""
