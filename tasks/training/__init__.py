"""Training: a published dataset version -> a Custom Diffusion run and its checkpoints.

train.py (reading the version for training, the loop, checkpoints; `gen4gen train`). May
import the stage layer's reader (tasks/reader.py), models and infra; not the stages,
publishing, views or evaluation.
"""
