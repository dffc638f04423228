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
from typing import Any, Sequence

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


class WeightsMissing(FileNotFoundError):
    """A model's weights are neither in the named folder nor in the local hub cache, and the
    hub cannot supply them now. Permanent for the run: retrying it only waits."""


HUB_TIMEOUT = 10.0  # seconds for the one reachability check when the weights are not cached


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _fixes(key: str, model: str, revision: str | None, files: str = "",
           local: str = "a local folder holding the weights (save_pretrained layout)") -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"Fix it either way: (1) on a machine that reaches the hub, `hf download {model}{files}{rev}` into this "
            f"cache (same HF_HOME / HF_HUB_CACHE; copy the cache folder over if this machine is offline); "
            f"or (2) set option {key!r} to {local}.")


def ensure_available(src: Source, *, what: str, key: str = "model") -> Source:
    """Fail now, naming the model, its revision, where it was looked for and the two fixes,
    unless its weights are there to load: a local path that exists, a hub id whose revision
    is in the local cache, or (online only) a hub that answers for it within seconds.

    Without this check a missing model meant minutes of hub retries inside from_pretrained,
    then an error naming neither the model nor the fix.
    """
    if src.local:
        return src
    from huggingface_hub import constants, snapshot_download

    revision = src.revision or "main"
    try:
        snapshot_download(src.path, revision=src.revision, local_files_only=True)
        return src
    except Exception:  # not cached (LocalEntryNotFoundError), or not a hub id at all
        pass
    looked = f"the local Hugging Face cache {constants.HF_HUB_CACHE}"
    _reach_hub(src.path, src.revision, f"{what}: model {src.path!r} at revision {revision!r} is not in {looked}",
               _fixes(key, src.path, src.revision))
    return src


def _reach_hub(repo: str, revision: str | None, missing: str, fixes: str) -> None:
    """What is `missing` from the cache may still come from the hub: WeightsMissing when the
    hub is off, or does not answer for `repo` within HUB_TIMEOUT seconds."""
    if _offline():
        raise WeightsMissing(f"{missing}, and the hub is off (HF_HUB_OFFLINE=1), so nothing can be downloaded. {fixes}")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo, revision=revision, timeout=HUB_TIMEOUT)
    except Exception as err:
        raise WeightsMissing(f"{missing}, and the hub did not supply it ({type(err).__name__}: {str(err)[:200]}). "
                             f"{fixes}") from None


def ensure_hub_file(repo: str, filenames: Sequence[str], *, what: str, key: str, local: str) -> str | None:
    """For a loader that fetches one file of a hub repo itself (open_clip): the cached path of
    the first of `filenames` in `repo` (at main); else, as `ensure_available`, WeightsMissing
    naming the repo, the files, the cache looked in and the two fixes, unless online and the
    hub answers for the repo within seconds (then None: the loader downloads it)."""
    from huggingface_hub import constants, try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return hit
    files = " or ".join(filenames)
    missing = f"{what}: hub repo {repo!r} (file {files}) is not in the local Hugging Face cache {constants.HF_HUB_CACHE}"
    _reach_hub(repo, None, missing, _fixes(key, repo, None, f" {filenames[0]}", local))
    return None


def source(options: dict[str, Any], key: str = "model", *, what: str, check: bool = True) -> Source:
    """The weights named by `options[key]`, checked before anything loads (see
    `ensure_available`), with an error naming the option.

    A path-looking value (absolute, ./, ~) must exist; a hub id must be in the local cache,
    or the hub must be reachable (and not switched off by HF_HUB_OFFLINE=1). `check=False`
    for a caller that checks a file of the repo itself (SAM's checkpoint_file).
    """
    value = options.get(key)
    if not value or not isinstance(value, str):
        raise ValueError(f"{what}: option {key!r} must name a local folder or a Hugging Face id, got {value!r}")
    value = os.path.expanduser(value)  # '~/weights' is a path too
    revision = options.get(f"{key}_revision", options.get("revision"))
    if value.startswith(("/", "./", "../")) and not os.path.exists(value):
        raise WeightsMissing(f"{what}: {key} {value!r} does not exist (looked for that path on this machine). "
                             f"{_fixes(key, '<hub id>', None)}")
    src = Source(value, revision)
    return ensure_available(src, what=what, key=key) if check else src


def placement(options: dict[str, Any]) -> tuple[str, Any]:
    """(device, dtype) from a backend's `device` and `dtype` options."""
    on = device(options.get("device", "auto"))
    return on, dtype(options.get("dtype", "auto"), on)
