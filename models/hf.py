"""Where a real model comes from and where it runs: one place for every torch backend.

A backend's options name its weights either as a local folder (or file) or as a Hugging
Face id with a pinned `revision`; the device is `auto` (CUDA when present) unless set, and
the dtype follows the device (fp16 on CUDA, fp32 on CPU, where fp16 kernels are missing
or slow) unless set. Backends call these helpers and never decide any of it themselves,
so a config means the same thing for every stage.

torch is imported inside the functions: the offline factory never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float32": "float32", "fp32": "float32"}


def device(name: str | None = "auto") -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu; anything else is passed through."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA device")
    return name


def dtype(name: str | None, on_device: str):
    """`auto` (or None) -> float16 on CUDA, float32 elsewhere; else the named dtype."""
    import torch

    if name in (None, "", "auto"):
        return torch.float16 if on_device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, DTYPES[name])
    except KeyError:
        raise ValueError(f"dtype {name!r}: expected one of {sorted(DTYPES)} or 'auto'") from None


@dataclass(frozen=True)
class Source:
    """Weights: a local path, or a hub id at a revision (`main` unless pinned)."""

    path: str
    revision: str | None = None

    @property
    def local(self) -> bool:
        return os.path.exists(self.path)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `from_pretrained` (revision only for hub ids)."""
        return {} if self.local or self.revision is None else {"revision": self.revision}


def source(options: dict[str, Any], key: str = "model", *, what: str) -> Source:
    """The weights named by `options[key]`, checked early with an error naming the option.

    A path-looking value (absolute, ./, ~) must exist; a hub id is passed on, and when the
    hub is offline (HF_HUB_OFFLINE=1) it must already be in the local cache, which
    `from_pretrained` reports itself.
    """
    value = options.get(key)
    if not value or not isinstance(value, str):
        raise ValueError(f"{what}: option {key!r} must name a local folder or a Hugging Face id, got {value!r}")
    value = os.path.expanduser(value)  # '~/weights' is a path too
    if value.startswith(("/", "./", "../")) and not os.path.exists(value):
        raise FileNotFoundError(f"{what}: {key} {value!r} does not exist")
    return Source(value, options.get(f"{key}_revision", options.get("revision")))


def placement(options: dict[str, Any]) -> tuple[str, Any]:
    """(device, dtype) from a backend's `device` and `dtype` options."""
    on = device(options.get("device", "auto"))
    return on, dtype(options.get("dtype", "auto"), on)
