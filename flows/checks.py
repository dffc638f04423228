"""Every check that can be made from a recipe and the command line, before any work.

`gen4gen generate` runs these before Prefect starts, so a bad recipe exits 2 naming the
file, field and value (README "The command line"), not after a flow run has begun.
"""

from __future__ import annotations

import importlib
import inspect

from gen4gen.infra.records import DatasetConfig
from gen4gen.models import registry
from gen4gen.models.detect import weights as detect_weights
from gen4gen.models.segment.weights import resolve_config
from gen4gen.tasks.pipeline import check_backends

FAMILIES = ("plan", "segment", "repaint", "caption")


def _constructor(decl: registry.Backend):
    if decl.factory is not None:
        return decl.factory
    module, _, name = decl.target.partition(":")
    return getattr(importlib.import_module(module), name)


def check_stages(config: DatasetConfig) -> None:
    """Each stage's backend is known and takes the options the recipe gives it.

    Options are bound to the backend's constructor without building it (no weights
    loaded): a misspelt option is a ValueError naming it. A backend that takes `**options`
    checks them itself when it loads (models/options.py).
    """
    # `auto` is checked as what it resolves to; an isnet stage without its weights fails here.
    config = resolve_config(config)[0]
    # The class checks' detector: `nanodet` named without its weights fails here, not mid-run.
    detect_weights.in_use(config.stages.filter.classes.detector)
    check_backends(config)  # every declared stage's backend, the filter's included
    for family in FAMILIES:
        stage = getattr(config.stages, family)
        decl = registry.declared(family, stage.backend)
        try:
            signature = inspect.signature(_constructor(decl))
        except (TypeError, ValueError):
            continue  # no signature to check against
        try:
            signature.bind(*decl.args, **stage.options)
        except TypeError as err:
            known = [p for p in signature.parameters if p not in ("self", "args", "kwargs")][len(decl.args):]
            raise ValueError(f"stages.{family}.options = {stage.options!r}: {err}; "
                             f"{stage.backend} takes {known or 'no options'}") from err
