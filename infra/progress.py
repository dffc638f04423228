"""Progress reports from stages to whoever listens (the CLI's progress bar).

Stages call `advance`; with no listener (a worker running a deployment) it does nothing.
Listeners run in the stage's thread, so they must be thread safe and quick. A stage that
ran in another process (Dask, Ray) told no listener here: the flow calls `settle` as each
stage task finishes, which tells the listeners what that task's own calls did not.
"""

from __future__ import annotations

import threading
from typing import Callable

Listener = Callable[[str, str, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def _subscribe(listeners: list[Listener], fn: Listener) -> Callable[[], None]:
    with _lock:
        listeners.append(fn)

    def remove() -> None:
        with _lock:
            if fn in listeners:
                listeners.remove(fn)

    return remove


def _tell(listeners: list[Listener], composition: str, stage: str, samples: int) -> None:
    with _lock:
        found = list(listeners)
    for fn in found:
        fn(composition, stage, samples)


def listen(fn: Listener) -> Callable[[], None]:
    """Add a listener; returns a function that removes it."""
    return _subscribe(_listeners, fn)


_told: dict[tuple[str, str], int] = {}  # samples advanced in this process, until settled


def advance(composition: str, stage: str, samples: int) -> None:
    with _lock:
        if not _listeners:
            return
        _told[(composition, stage)] = _told.get((composition, stage), 0) + samples
    _tell(_listeners, composition, stage, samples)


def settle(composition: str, stage: str, samples: int) -> None:
    """A stage task of (composition, stage) finished with `samples`: advance whatever its
    own `advance` calls did not tell this process."""
    with _lock:
        done = _told.pop((composition, stage), 0)
    if samples > done:
        _tell(_listeners, composition, stage, samples - done)


# Work done, apart from progress: how many samples a stage really computed (not read back
# from their committed records). Tests and benchmarks count recomputation with it.
_workers: list[Listener] = []


def listen_computed(fn: Listener) -> Callable[[], None]:
    """Add a listener of (composition, stage, samples computed); returns its remover."""
    return _subscribe(_workers, fn)


def computed(composition: str, stage: str, samples: int) -> None:
    _tell(_workers, composition, stage, samples)
