"""Model lifecycle: what each loaded model weighs, where its weights are, and one device
memory budget per worker process that the registry keeps by offloading or releasing the
least recently used models.

What a managed model (a backend object) offers, all optional (a model without
`memory_parts` weighs nothing to the budget: the offline backends, an OpenAI client):

- `device` (str): where it runs;
- `memory_parts()`: the torch modules holding its weights on `device` (a module shared by
  two parts, the SDXL refiner's VAE, is counted once);
- `working_bytes()`: an estimate of the activation memory one call of a stage needs, held in
  reserve while the model is held (`registry.use`);
- `streams_weights` (bool): its weights live in CPU memory and go to the device one
  component at a time (diffusers' `enable_model_cpu_offload`, itself accelerate's
  `cpu_offload_with_hook`); idle it weighs nothing, in use its largest part.

Moving a whole model between stages is `Module.to` on its parts; streaming inside one model
is diffusers' (and accelerate's) business. Building happens with `staging()` active, which
makes the backends' `place()` keep the new weights on the CPU: the registry can weigh a new
model before it takes device memory, make room, then move it.

The budget counts weights on the budget device plus the working reserve of held models.
A load that does not fit offloads (policy `offload`: weights to CPU memory, back in seconds)
or releases (policy `release`: dropped, rebuilt from disk next time) unheld models, least
recently used first, then empties the allocator's cache (accelerate's clear_device_cache).
A model held by any thread is never moved. When only other threads' holds stand in the way,
a load waits for them up to `wait_seconds`, then goes ahead over budget with a warning; when
the caller's own holds stand in the way (a stage using two models at once), waiting could
never end, so it goes ahead over budget at once, with a warning.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

GiB = 1024**3
MARGIN_GB = 1.5  # left free under mem_get_info's figure: CUDA context growth, fragmentation
POLICIES = ("offload", "release")
Policy = Literal["offload", "release"]
log = logging.getLogger("gen4gen.models.lifecycle")

_STAGING: contextvars.ContextVar[bool] = contextvars.ContextVar("gen4gen_staging", default=False)


@contextmanager
def staging() -> Iterator[None]:
    """Models built inside keep their weights on the CPU (see `place`)."""
    token = _STAGING.set(True)
    try:
        yield
    finally:
        _STAGING.reset(token)


def place(module: Any, device: str) -> Any:
    """`module.to(device)`, or to the CPU while the registry stages a build."""
    return module.to("cpu" if _STAGING.get() else device)


def build_device(device: str) -> str:
    """Where a backend building now should create its weights (for constructors that take a
    device, like open_clip's)."""
    return "cpu" if _STAGING.get() else device


def weight_bytes(modules: Iterable[Any]) -> int:
    """Bytes of the parameters and buffers of `modules`, each tensor counted once."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in (*m.parameters(), *m.buffers()):
            seen.setdefault(id(t), t.numel() * t.element_size())
    return sum(seen.values())


def parts(model: Any) -> list[Any]:
    get = getattr(model, "memory_parts", None)
    return [m for m in get() if m is not None] if get else []


def _norm(device: str | None) -> str | None:
    if device is None:
        return None
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return device


@dataclass
class Entry:
    key: tuple[str, str, str]
    model: Any
    device: str  # where it runs
    weights: int  # bytes on `device` when onloaded
    on_device: bool
    streams: bool = False
    largest: int = 0  # the largest part (what a streaming model holds at once)
    holders: Counter = field(default_factory=Counter)  # thread id -> holds
    last_used: float = 0.0

    def working(self) -> int:
        get = getattr(self.model, "working_bytes", None)
        return (int(get()) if get else 0) + (self.largest if self.streams else 0)

    def resident_bytes(self) -> int:
        return self.onload_bytes() if self.on_device else 0

    def onload_bytes(self) -> int:
        """What moving it onto its device adds (a streaming model stays in CPU memory)."""
        return 0 if self.streams else self.weights


@dataclass(frozen=True)
class Resident:
    """One loaded model: where its weights are and what it counts against the budget."""

    family: str
    backend: str
    options: str
    device: str  # where its weights are now: its device, or "cpu" when offloaded
    bytes: int  # weights (resident on `device` unless streamed)
    working: int  # activation reserve while held
    held: int  # holds by all threads
    streams: bool


class Lifecycle:
    """The loaded models of one process and the device budget they live in."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.cond = threading.Condition(threading.RLock())
        self.budget: int | None = None
        self.device: str | None = None
        self.policy: Policy = "offload"
        self.wait_seconds = 300.0
        self.configured = False
        self.log: Callable[[str, int], None] = _log

    # ------------------------------------------------------------ settings

    def configure(self, gpu_memory_gb: float | None = None, device: str | None = None,
                  policy: str = "offload", wait_seconds: float = 300.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"run.memory_policy: {policy!r}, expected one of {list(POLICIES)}")
        if gpu_memory_gb is not None and gpu_memory_gb < 0:
            raise ValueError(f"run.gpu_memory_gb: must be at least 0, got {gpu_memory_gb}")
        with self.cond:
            self.policy = policy  # type: ignore[assignment]
            self.wait_seconds = float(wait_seconds)
            self.device = _norm(device) or _cuda_device()
            if self.device is None:  # no CUDA and no device named: nothing to budget
                self.budget = None
            elif gpu_memory_gb is not None:
                self.budget = int(gpu_memory_gb * GiB)
            else:
                self.budget = self._auto_budget()
            self.configured = True
            self.cond.notify_all()

    def _auto_budget(self) -> int | None:
        """Free device memory now, plus what our own models already take, minus a margin."""
        if not (self.device or "").startswith("cuda"):
            return None
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return max(0, int(free + self.used() - MARGIN_GB * GiB))

    def _ensure_configured(self) -> None:
        if not self.configured:
            self.configure()

    # ------------------------------------------------------------ accounting

    def counts(self, e: Entry) -> bool:
        return self.device is not None and _norm(e.device) == self.device

    def used(self, exclude: Entry | None = None) -> int:
        total = 0
        for e in self.entries.values():
            if e is exclude or not self.counts(e):
                continue
            total += e.resident_bytes() + (e.working() if e.holders else 0)
        return total

    def resident(self) -> list[Resident]:
        with self.cond:
            return [
                Resident(*e.key, device=e.device if e.on_device else "cpu", bytes=e.weights, working=e.working(),
                         held=sum(e.holders.values()), streams=e.streams)
                for e in sorted(self.entries.values(), key=lambda e: e.last_used)
            ]

    # ------------------------------------------------------------ load / hold

    def acquire(self, key: tuple[str, str, str], build: Callable[[], Any], hold: bool) -> Any:
        """The model for `key` on its device (built if new), held by this thread if `hold`."""
        me = threading.get_ident()
        with self.cond:
            self._ensure_configured()
            e = self.entries.get(key)
            new = e is None
            if e is None:
                with staging():
                    model = build()
                e = self._entry(key, model)
                self.entries[key] = e
            if hold:
                e.holders[me] += 1  # first: nothing evicts it while we make room
            try:
                if new or not e.on_device or hold:
                    self._make_room(e, me)
                if not e.on_device:
                    self._move(e, e.device)
                    e.on_device = True
            except BaseException:
                if hold:
                    self._unhold(e, me)
                raise
            e.last_used = time.monotonic()
            return e.model

    def release_hold(self, key: tuple[str, str, str]) -> None:
        with self.cond:
            e = self.entries.get(key)
            if e is not None:
                self._unhold(e, threading.get_ident())
                e.last_used = time.monotonic()
            self.cond.notify_all()

    def _unhold(self, e: Entry, me: int) -> None:
        e.holders[me] -= 1
        if e.holders[me] <= 0:
            del e.holders[me]

    def drop(self, key: tuple[str, str, str]) -> bool:
        """Forget one unheld model (its memory goes once no one else references it)."""
        with self.cond:
            e = self.entries.get(key)
            if e is None:
                return False
            if e.holders:
                raise RuntimeError(f"{key[0]}/{key[1]} is in use; it cannot be released")
            self._evict(e, "release", reason="released")
            _clear_cache()
            return True

    def _entry(self, key, model) -> Entry:
        ps = parts(model)
        device = getattr(model, "device", None)
        device = str(device) if device is not None else "cpu"
        streams = bool(getattr(model, "streams_weights", False))
        largest = max((weight_bytes([p]) for p in ps), default=0)
        on_cpu_now = all(str(t.device) == "cpu" for p in ps for t in p.parameters())
        # A model placed on the CPU by staging but meant for another device is not on it yet.
        on_device = streams or not ps or not on_cpu_now or device == "cpu"
        return Entry(key, model, device, weight_bytes(ps), on_device, streams, largest)

    # ------------------------------------------------------------ eviction

    def _make_room(self, e: Entry, me: int) -> None:
        """Evict until `e` fits on its device (weights, and its working reserve if held)."""
        if self.budget is None or not self.counts(e):
            return
        need = e.onload_bytes() + (e.working() if e.holders else 0)
        deadline = time.monotonic() + self.wait_seconds
        evicted = False
        while self.used(exclude=e) + need > self.budget:
            victim = self._lru(exclude=e)
            if victim is not None:
                self._evict(victim, self.policy, reason=f"for {e.key[0]}/{e.key[1]}", beside=e)
                evicted = True
                continue
            others = any(t != me for x in self.entries.values() if x is not e for t in x.holders)
            left = deadline - time.monotonic()
            if not others or left <= 0:
                total = self.used(exclude=e) + need
                self.log(
                    f"memory: {e.key[0]}/{e.key[1]} goes over the budget: {total / GiB:.2f} GiB of "
                    f"{self.budget / GiB:.2f} GiB on {self.device}; held: {self._held_names()}"
                    + ("" if others else " (by this thread)"), logging.WARNING)
                break
            self.cond.wait(timeout=left)
        if evicted:  # hand the freed blocks back before the new weights arrive
            _clear_cache()

    def _lru(self, exclude: Entry) -> Entry | None:
        free = [x for x in self.entries.values()
                if x is not exclude and not x.holders and self.counts(x) and x.resident_bytes() > 0]
        return min(free, key=lambda x: x.last_used, default=None)

    def _evict(self, v: Entry, policy: str, reason: str, beside: Entry | None = None) -> None:
        size = v.resident_bytes()
        if policy == "offload":
            self._move(v, "cpu")
            v.on_device = False
            what = "offloaded to cpu"
        else:
            del self.entries[v.key]
            if v.on_device and not v.streams and v.device != "cpu":
                self._move(v, "cpu")  # a stale reference elsewhere then pins CPU memory, not the GPU
            what = "released"
        self.log(f"memory: {what} {v.key[0]}/{v.key[1]} ({size / GiB:.2f} GiB) {reason}; "
                 f"{self.used(exclude=beside) / GiB:.2f} GiB in use beside it on {self.device}"
                 + (f" of {self.budget / GiB:.2f} GiB" if self.budget is not None else ""), logging.INFO)

    def _move(self, e: Entry, device: str) -> None:
        if e.streams:
            return  # diffusers' hooks place its parts; moving them would undo the offload
        for p in parts(e.model):
            p.to(device)

    def _held_names(self) -> str:
        return ", ".join(f"{x.key[0]}/{x.key[1]}" for x in self.entries.values() if x.holders) or "none"


def _cuda_device() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return _norm("cuda") if torch.cuda.is_available() else None


def _clear_cache() -> None:
    try:
        from accelerate.utils.memory import clear_device_cache
    except ImportError:
        import gc

        gc.collect()
        return
    clear_device_cache(garbage_collection=True)


def _log(message: str, level: int) -> None:
    """To Prefect's run logger inside a flow or task run, else to `logging`."""
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            get_run_logger().log(level, message)
            return
        except MissingContextError:
            pass
    except ImportError:
        pass
    log.log(level, message)
