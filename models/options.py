"""Backend options checked once, at load time, with errors that name the option.

A backend declares its options as a pydantic model (unknown keys forbidden); `parse` turns
pydantic's report into one ValueError that starts with the stage and backend
("stages.repaint (sdxl): option 'strength' ...") so that a typo in a recipe is found before
any weights are read.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


def parse(cls: type[T], options: dict[str, Any], what: str) -> T:
    try:
        return cls.model_validate(options)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]) or "(options)"
            if e["type"] == "extra_forbidden":
                known = ", ".join(sorted(cls.model_fields))
                problems.append(f"option {name!r} is unknown (known: {known})")
            else:
                problems.append(f"option {name!r}: {e['msg']} (got {e.get('input')!r})")
        raise ValueError(f"{what}: " + "; ".join(problems)) from None
