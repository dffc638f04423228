"""Backends that note the resources Ray gave the task running them (tests/ops/test_runners.py).

A backend is looked up by name in the process where its stage runs, so Ray's workers import
this module too (the test's worker_process_setup_hook) and register the same two. They
caption and judge as the template captioner and the rules judge do.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import ray

from gen4gen.models import registry
from gen4gen.models.caption.captioner import TemplateCaptioner
from gen4gen.models.score.judge import RulesJudge

NOTES = "GEN4GEN_TEST_RAY_NOTES"  # the folder the notes go to (set before Ray starts)


def _note(stage: str) -> None:
    resources = ray.get_runtime_context().get_assigned_resources()
    Path(os.environ[NOTES], f"{stage}-{uuid.uuid4().hex}.json").write_text(json.dumps(resources))


class NotingCaptioner(TemplateCaptioner):
    def caption_batch(self, *args, **kwargs):
        _note("caption")
        return super().caption_batch(*args, **kwargs)


class NotingJudge(RulesJudge):
    def __init__(self, detect_threshold=None, min_similarity=None, vision=None, **thresholds):
        super().__init__(**thresholds)  # a model judge's settings (tasks/filter.py), unused

    def judge_batch(self, items):
        _note("filter")
        return super().judge_batch(items)


def register() -> None:
    registry.register("caption", "noting-gpu", gpu=True)(NotingCaptioner)  # declared on a GPU
    registry.register("filter", "noting-cpu")(NotingJudge)  # declared on the CPU


def unregister() -> None:
    registry.unregister("caption", "noting-gpu")
    registry.unregister("filter", "noting-cpu")
