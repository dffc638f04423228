"""`gen4gen associate`: compositions of a recipe's concepts proposed by its LLM endpoint.

The paper chose its 41 compositions by hand, as objects likely to be seen together; this
asks the recipe's OpenAI-compatible endpoint (`stages.plan`, backend `openai`) instead and
writes the proposals as YAML to paste under `compositions:`. Only the recipe's concepts
and `stages.plan` are read, so a recipe that has no compositions yet can be used. Every
proposal is checked (known ids, 2 to 5 different concepts, not already in the recipe) and
validated as a `Composition` before it is written.

Without an endpoint (any other `stages.plan` backend) the proposals come offline from a
small table of settings and the categories usually seen in them (tasks/intake/ingest.py
`SETTINGS`): compositions of 2 or 3 concepts whose categories share a setting, every
concept used first when `--max` allows; the same recipe always gives the same proposals.
"""

from __future__ import annotations

import sys

import yaml
from pydantic import TypeAdapter, ValidationError

DEFAULT_SAMPLES = 8
OFFLINE_SOURCE = "the offline co-occurrence table"


def composition_id(concepts: list[str], used: set[str], number: int) -> str:
    """The concept ids joined by '-', when that makes a valid, unused id; else a numbered one."""
    from gen4gen.infra.records import Composition

    for candidate in ("-".join(concepts)[:64], f"proposal-{number}"):
        try:
            Composition(id=candidate, concepts=concepts)
        except ValidationError:
            continue
        if candidate not in used:
            return candidate
    n = number
    while f"proposal-{n}" in used:
        n += 1
    return f"proposal-{n}"


def render(proposals, taken_ids: set[str], source: str) -> str:
    """YAML for the proposals, each with the endpoint's reason as a comment above it."""
    from gen4gen.infra.records import Composition

    used = set(taken_ids)
    lines = [f"# Compositions proposed by {source} (gen4gen associate); paste under `compositions:`.", "compositions:"]
    for i, p in enumerate(proposals, 1):
        cid = composition_id(p.concepts, used, i)
        used.add(cid)
        Composition(id=cid, concepts=p.concepts, samples=DEFAULT_SAMPLES)  # a last check
        why = "".join(ch if ch.isprintable() else " " for ch in p.why).strip()
        if why:
            lines.append(f"  # {why}")
        item = yaml.safe_dump({"id": cid, "concepts": p.concepts, "samples": DEFAULT_SAMPLES}, default_flow_style=True, width=1000).strip()
        lines.append(f"  - {item}")
    return "\n".join(lines) + "\n"


def associate_command(config: str, most: int, out: str | None) -> int:
    """Exit 0 with the YAML written, 1 when the endpoint gives no valid answer, 2 for an
    unusable recipe or option."""
    from gen4gen.infra.storage import read_bytes, resolve, write_bytes
    from gen4gen.models import registry
    from gen4gen.models.plan.llm_planner import AnswerRejected
    from gen4gen.infra.records import Concept, StageConfig
    from gen4gen.tasks.intake.ingest import propose

    try:
        raw = yaml.safe_load(read_bytes(config).decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{config}: a recipe is a YAML mapping")
        concepts = TypeAdapter(list[Concept]).validate_python(raw.get("concepts") or [])
        plan = StageConfig.model_validate((raw.get("stages") or {}).get("plan") or {})
        if most < 1:
            raise ValueError(f"--max: must be at least 1, got {most}")
        taken = [list(c.get("concepts", [])) for c in raw.get("compositions") or [] if isinstance(c, dict)]
        taken_ids = {str(c.get("id")) for c in raw.get("compositions") or [] if isinstance(c, dict)}
        pool = [(c.id, c.category) for c in concepts]
        if plan.backend == "openai":
            planner = registry.load("plan", "openai", plan.options)
            proposals = planner.associate(pool, most, taken)
            source = plan.options.get("model", "the endpoint")
        else:
            proposals = propose(pool, most, taken)
            source = OFFLINE_SOURCE
            print(f"no LLM endpoint (stages.plan.backend {plan.backend!r}): proposing from "
                  "the offline co-occurrence table", file=sys.stderr)
            if not proposals:
                raise AnswerRejected("every composition of 2 or 3 of these concepts is in the recipe already")
    except AnswerRejected as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, yaml.YAMLError) as err:  # ValidationError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(proposals, taken_ids, source)
    if out:
        write_bytes(resolve(out), text.encode())
        print(f"{len(proposals)} compositions written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
