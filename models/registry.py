"""Load each model once per worker process, whatever the number of tasks that use it.

A stage asks `load(family, backend, options)`; the first call builds the model, later
calls with the same arguments get the same object. A lock guards the build because the
default Prefect task runner is a thread pool: two compositions starting together must not
load a multi-gigabyte model twice. Real backends (SAM, SDXL, LLaVA...) register here too.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

_Factory = Callable[..., Any]
_FACTORIES: dict[tuple[str, str], _Factory] = {}
_LOADED: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()


# The one place that says which backends run on a GPU: their tasks take a GPU slot
# (infra/limits.py). Offline backends do not. Real backends also mark themselves with
# register(..., gpu=True); the names the real backends use are listed here as well so a
# backend registered elsewhere without the flag still takes a slot.
GPU_BACKENDS: set[tuple[str, str]] = {
    ("segment", "sam"),
    ("repaint", "sdxl"),
    ("repaint", "sd-inpaint"),
    ("caption", "llava"),
    ("filter", "clip"),
}


def register(family: str, backend: str, gpu: bool = False) -> Callable[[_Factory], _Factory]:
    def deco(factory: _Factory) -> _Factory:
        _FACTORIES[(family, backend)] = factory
        if gpu:
            GPU_BACKENDS.add((family, backend))
        return factory

    return deco


def uses_gpu(family: str, backend: str | None) -> bool:
    """Whether a stage on this backend needs a GPU (and so a GPU slot)."""
    _register_builtin()
    return (family, backend) in GPU_BACKENDS


def backends(family: str) -> list[str]:
    _register_builtin()
    return sorted(b for f, b in _FACTORIES if f == family)


def check(family: str, backend: str) -> None:
    """Raise a clear error for a backend name no one registered (a config typo)."""
    if backend not in backends(family):
        raise ValueError(
            f"stages.{family}.backend: unknown backend {backend!r}; known: {backends(family)}"
        )


def load(family: str, backend: str, options: dict[str, Any] | None = None) -> Any:
    """The model for (family, backend, options), built at most once per process."""
    check(family, backend)
    options = options or {}
    key = (family, backend, json.dumps(options, sort_keys=True, default=str))
    model = _LOADED.get(key)
    if model is None:
        with _LOCK:
            model = _LOADED.get(key)
            if model is None:
                model = _FACTORIES[(family, backend)](**options)
                _LOADED[key] = model
    return model


def loaded() -> list[tuple[str, str, str]]:
    """What this process has loaded so far (for tests and diagnostics)."""
    return list(_LOADED)


_BUILTIN_DONE = False


def _register_builtin() -> None:
    # Imported lazily so that importing the registry never pulls in heavy libraries.
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    _BUILTIN_DONE = True

    @register("plan", "offline")
    def _planner(**opts):
        from models.planner import OfflinePlanner

        return OfflinePlanner(**opts)

    @register("plan", "openai")
    def _llm_planner(**opts):
        from models.llm_planner import LLMPlanner

        return LLMPlanner(**opts)

    @register("segment", "offline")
    def _segmenter(**opts):
        from models.segmenter import OfflineSegmenter

        return OfflineSegmenter(**opts)

    @register("repaint", "offline")
    def _repainter(**opts):
        from models.repainter import OfflineRepainter

        return OfflineRepainter(**opts)

    @register("caption", "template")
    def _captioner(**opts):
        from models.captioner import TemplateCaptioner

        return TemplateCaptioner(**opts)

    @register("personalise", "custom-diffusion")
    def _personalised(**opts):
        from models.personalised import PersonalisedPipeline

        return PersonalisedPipeline(**opts)

    @register("vision", "clip")
    def _clip(**opts):
        from models.vision import Clip

        return Clip(**opts)

    @register("vision", "owlvit")
    def _owlvit(**opts):
        from models.vision import OwlVit

        return OwlVit(**opts)

    @register("caption", "llava")
    def _llava(**opts):
        from models.llava import LlavaCaptioner

        return LlavaCaptioner(**opts)

    @register("segment", "sam")
    def _sam(**opts):
        from models.sam import SamSegmenter

        return SamSegmenter(**opts)

    @register("repaint", "sdxl")
    def _sdxl(**opts):
        from models.diffusion_repaint import DiffusionRepainter

        return DiffusionRepainter("sdxl", **opts)

    @register("repaint", "sd-inpaint")
    def _sd_inpaint(**opts):
        from models.diffusion_repaint import DiffusionRepainter

        return DiffusionRepainter("sd-inpaint", **opts)
