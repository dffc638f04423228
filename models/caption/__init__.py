"""Captioning backends: an image and its objects -> a caption with the concept tokens.

captioner.py (template captions, token checks), llava.py (LLaVA). May import the shared
models/*.py and infra; no other family.
"""
