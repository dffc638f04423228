"""Every model backend declared once, and loaded once per worker process.

A backend is declared by a row of `BACKENDS`: its family (the stage that uses it), its
name (what a recipe writes), the class that implements its family's Protocol
(models/contracts.py), whether it runs on a GPU, and which modules are its code (their
source is its code version, part of the cache key of what it makes). The class is
imported only when the backend is first loaded, so importing the registry never pulls in
torch or diffusers.

`load(family, backend, options)` builds the model at most once per process under a lock
(the default Prefect task runner is a thread pool: two compositions starting together
must not load a multi-gigabyte model twice); later calls get the same object.

Memory (models/lifecycle.py): `configure(gpu_memory_gb, device, policy)` sets the worker's
device budget once; `use(...)` holds a model on its device for a stage's body (never
evicted while held); a load that would go over the budget first offloads or releases the
least recently used unheld models; `resident()` says what is loaded, where, and its bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from gen4gen.models import lifecycle
_Factory = Callable[..., Any]


@dataclass(frozen=True)
class Backend:
    """One model backend: what a recipe names, what implements it, what it needs."""

    family: str
    name: str
    target: str = ""  # "module:Class" implementing the family's Protocol
    gpu: bool = False  # its stage holds a GPU slot and its weights count against the budget
    code: tuple[str, ...] = ()  # more modules whose source changes what it makes
    args: tuple[Any, ...] = ()  # positional arguments before the recipe's options
    factory: _Factory | None = field(default=None, compare=False)  # instead of target (tests)

    def build(self, options: dict[str, Any]) -> Any:
        if self.factory is not None:
            return self.factory(*self.args, **options)
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*self.args, **options)

    def modules(self) -> tuple[str, ...]:
        own = (self.target.partition(":")[0],) if self.target else ()
        return own + self.code


M = "gen4gen.models."
BACKENDS: dict[tuple[str, str], Backend] = {
    (b.family, b.name): b
    for b in (
        Backend("plan", "offline", M + "plan.planner:OfflinePlanner", code=(M + "scenes",)),
        Backend("plan", "openai", M + "plan.llm_planner:LLMPlanner", code=(M + "plan.planner", M + "scenes")),
        Backend("segment", "offline", M + "segment.segmenter:OfflineSegmenter"),
        Backend("segment", "sam", M + "segment.sam:SamSegmenter", gpu=True),
        # gpu=False: an ONNX session, not torch (nothing for the GPU budget to weigh or move); it
        # runs on the CPU unless onnxruntime's CUDA provider is installed, and 88 MB of weights
        # need no GPU slot of their own. models/segment/segmenter.py: its alpha handling.
        Backend("segment", "isnet", M + "segment.isnet:IsNetSegmenter", code=(M + "segment.segmenter",)),
        Backend("repaint", "offline", M + "repaint.repainter:OfflineRepainter", code=(M + "scenes",)),
        Backend("repaint", "sdxl", M + "repaint.diffusion_repaint:DiffusionRepainter", gpu=True,
                code=(M + "repaint.repainter", M + "scenes"), args=("sdxl",)),
        Backend("repaint", "sd-inpaint", M + "repaint.diffusion_repaint:DiffusionRepainter", gpu=True,
                code=(M + "repaint.repainter", M + "scenes"), args=("sd-inpaint",)),
        Backend("caption", "template", M + "caption.captioner:TemplateCaptioner"),
        Backend("caption", "llava", M + "caption.llava:LlavaCaptioner", gpu=True, code=(M + "caption.captioner",)),
        Backend("filter", "rules", M + "score.judge:RulesJudge"),
        Backend("filter", "clip", M + "score.judge:ClipJudge", gpu=True, code=(M + "score.vision",)),
        Backend("vision", "clip", M + "score.vision:Clip", gpu=True),
        Backend("vision", "owlvit", M + "score.vision:OwlVit", gpu=True),
        # The class checks' COCO detector (models/detect/checks.py), asked by the segment and
        # filter stages: an ONNX session on the CPU (7.6 MB of weights, 0.06 CPU s an image).
        Backend("detect", "nanodet", M + "detect.nanodet:NanoDet", code=(M + "detect.checks",)),
        Backend("personalise", "custom-diffusion", M + "train.personalised:PersonalisedPipeline", gpu=True),
    )
}
_LIFE = lifecycle.Lifecycle()
_LOADED = _LIFE.entries  # (family, backend, options json) -> lifecycle.Entry
_LOCK = _LIFE.cond  # one lock for loading and for the budget


def register(family: str, backend: str, gpu: bool = False) -> Callable[[_Factory], _Factory]:
    """Declare a backend built by a factory function (a plugin, or a test's own model)."""

    def deco(factory: _Factory) -> _Factory:
        BACKENDS[(family, backend)] = Backend(family, backend, gpu=gpu, factory=factory)
        return factory

    return deco


def unregister(family: str, backend: str) -> None:
    BACKENDS.pop((family, backend), None)


def declared(family: str, backend: str) -> Backend:
    check(family, backend)
    return BACKENDS[(family, backend)]


def uses_gpu(family: str, backend: str | None) -> bool:
    """Whether a stage on this backend needs a GPU (and so a GPU slot)."""
    found = BACKENDS.get((family, backend or ""))
    return bool(found and found.gpu)


def backends(family: str) -> list[str]:
    return sorted(b for f, b in BACKENDS if f == family)


def check(family: str, backend: str) -> None:
    """Raise a clear error for a backend name no one registered (a config typo)."""
    if (family, backend) not in BACKENDS:
        raise ValueError(f"stages.{family}.backend: unknown backend {backend!r}; known: {backends(family)}")


def code_version(family: str, backend: str) -> str:
    """Fingerprint of the backend's own modules (a backend declared by a factory: the
    factory's module). Found by module name without importing anything."""
    b = declared(family, backend)
    modules = b.modules() or (b.factory.__module__,)
    return modules_hash(modules)


def modules_hash(modules: tuple[str, ...]) -> str:
    """Fingerprint of modules' source files (a stage's own code uses it too)."""
    return hashlib.sha256(b"".join(_module_hash(m).encode() for m in modules)).hexdigest()


@lru_cache(maxsize=None)
def _module_hash(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ValueError(f"code module {module!r} is not importable")
    if not spec.origin or not spec.origin.endswith(".py"):
        return module  # a module with no source file (a test's in-memory one): its name
    return hashlib.sha256(module.encode() + b"\0" + Path(spec.origin).read_bytes()).hexdigest()


def _key(family: str, backend: str, options: dict[str, Any] | None) -> tuple[str, str, str]:
    return (family, backend, json.dumps(options or {}, sort_keys=True, default=str))


def configure(gpu_memory_gb: float | None = None, device: str | None = None, policy: str = "offload",
              wait_seconds: float = 300.0) -> None:
    """The worker's device memory budget, set once by the flow before its stages run.

    `gpu_memory_gb` None: what torch.cuda.mem_get_info reports free (plus what our models
    already take) minus a 1.5 GiB margin. `device` None: the current CUDA device, or no
    budget on a machine without CUDA (a test may name "cpu"). `policy`: `offload` (least
    recently used models to CPU memory) or `release` (dropped, rebuilt when needed again).
    `wait_seconds`: how long a load waits for other threads' held models before it goes
    over budget with a warning.
    """
    _LIFE.configure(gpu_memory_gb, device, policy, wait_seconds)


def load(family: str, backend: str, options: dict[str, Any] | None = None) -> Any:
    """The model for (family, backend, options), built at most once per process and on its
    device when returned. Not held: a later load may offload it to make room, so a stage
    that runs batches on it uses `use` instead."""
    decl = declared(family, backend)
    options = options or {}
    return _LIFE.acquire(_key(family, backend, options), lambda: decl.build(options), hold=False)


def loaded() -> list[tuple[str, str, str]]:
    """What this process has loaded and not released (for tests and diagnostics)."""
    return list(_LOADED)


def resident() -> list[lifecycle.Resident]:
    """Every loaded model, least recently used first: where its weights are, their bytes,
    the working reserve it holds while in use, and how many holds it has."""
    return _LIFE.resident()


def release(family: str, backend: str, options: dict[str, Any] | None = None) -> bool:
    """Drop one unheld model from the registry and empty the device cache; False if it was
    not loaded. A model in use raises."""
    return _LIFE.drop(_key(family, backend, options))


@contextmanager
def use(family: str, backend: str, options: dict[str, Any] | None = None) -> Iterator[Any]:
    """The loaded model, held for the body: a stage runs its batches inside this, so the
    model is on its device while in use and never evicted under it (by any thread)."""
    decl = declared(family, backend)
    options = options or {}
    key = _key(family, backend, options)
    model = _LIFE.acquire(key, lambda: decl.build(options), hold=True)
    try:
        yield model
    finally:
        _LIFE.release_hold(key)
