"""Publishing: a run's kept samples -> a dataset version on storage.

publish.py (collect, then images, shards and the manifest last), ownership.py (what in an
output folder is ours to replace), card.py (the dataset card), verify.py (`gen4gen verify`).
May import the stage layer (tasks/stage.py, common.py, reader.py), models and infra; not the
stages (tasks/plan.py ... filter.py), views, training or evaluation.
"""
