"""What every stage shares: content digests.

The stage loop itself (skipping committed samples, bad inputs as data) is tasks/stage.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(*parts: Any) -> str:
    """sha256 over JSON-serialised parts (pydantic records included), sorted keys."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "model_dump"):
            part = part.model_dump(mode="json")
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()
