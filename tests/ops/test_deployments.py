"""prefect.yaml: valid for Prefect, and every deployment fits the flow it names.

flows/train.py and flows/evaluate.py are written on other branches: the checks of a
deployment whose flow file is not in this checkout are skipped (they run once merged).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
# What each event carries (CONTRACTS.md; flows/generate.py for dataset.published).
PAYLOADS = {
    "dataset.published": {"uri", "version", "manifest", "kept", "planned", "config_sha256", "flow_run", "flow_run_name"},
    "checkpoint.landed": {"checkpoint", "step", "run", "dataset", "dataset_version", "flow_run", "flow_run_name"},
}
RESOURCES = {"dataset.published": "gen4gen.dataset.demo", "checkpoint.landed": "gen4gen.checkpoint.run1.100"}


def test_prefect_reads_the_file_and_its_triggers_and_schedules():
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    model = PrefectYamlModel.model_validate(SPEC)
    assert {d.name for d in model.deployments} == {"demo-nightly", "on-dataset", "on-checkpoint"}
    for d in model.deployments:
        assert d.work_pool and d.work_pool.name in {"gen4gen-cpu", "gen4gen-gpu"}
        for s in DEPLOYMENTS[d.name].get("schedules", []):
            RawScheduleConfig.model_validate(s)
        for trigger in _initialize_deployment_triggers(d.name, [dict(t) for t in DEPLOYMENTS[d.name].get("triggers", [])]):
            assert trigger.enabled
    clone = model.pull[0]["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "{{ $GEN4GEN_REPO }}"


def test_generate_runs_nightly_one_at_a_time():
    d = DEPLOYMENTS["demo-nightly"]
    assert d["schedules"][0]["cron"] == "0 2 * * *"
    assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert (REPO / d["parameters"]["config"]).is_file()


def test_train_follows_the_event_generate_emits():
    from gen4gen.flows import generate

    trigger = DEPLOYMENTS["on-dataset"]["triggers"][0]
    assert trigger["expect"] == [generate.PUBLISHED_EVENT]
    from gen4gen.infra import lineage

    assert "lineage.announce_dataset(manifest" in inspect.getsource(generate._generate)
    subject = lineage.resource("dataset", "demo")["prefect.resource.id"]  # announce_dataset's resource
    assert subject == "gen4gen.dataset.demo"
    assert fnmatch.fnmatch(subject, trigger["match"]["prefect.resource.id"])
    assert trigger["parameters"]["upstream"] == "{{ event.payload.flow_run | default('') }}"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_imports_and_parameters_fit_the_signature(name):
    from prefect.flows import load_flow_from_entrypoint

    d = DEPLOYMENTS[name]
    path, func = d["entrypoint"].split(":")
    if not (REPO / path).is_file():
        pytest.skip(f"{path} is not on this branch yet (written by another helper); checked once merged")
    flow = load_flow_from_entrypoint(str(REPO / path) + ":" + func)
    params = inspect.signature(flow.fn).parameters
    given = dict(d.get("parameters", {}))
    for trigger in d.get("triggers", []):
        event = trigger["expect"][0]
        assert fnmatch.fnmatch(RESOURCES[event], trigger["match"]["prefect.resource.id"])
        for key, template in trigger["parameters"].items():
            field = re.fullmatch(r"\{\{ event\.payload\.(\w+)(?: \| default\(''\))? \}\}", template)
            assert field and field.group(1) in PAYLOADS[event], f"{name}: {key} from {template}"
        given |= trigger["parameters"]
    unknown = set(given) - set(params)
    assert not unknown, f"{name}: parameters {sorted(unknown)} are not in {flow.name}{inspect.signature(flow.fn)}"
    required = {p for p, v in params.items() if v.default is inspect.Parameter.empty}
    assert required <= set(given), f"{name}: {sorted(required - set(given))} have no value"


def test_evaluate_trigger_is_the_event_named_in_flows_evaluate():
    path = REPO / "flows" / "evaluate.py"
    if not path.is_file():
        pytest.skip("flows/evaluate.py is not on this branch yet (written by another helper)")
    import gen4gen.flows.evaluate as evaluate

    constants = {v for k, v in vars(evaluate).items() if k.isupper() and isinstance(v, str)}
    assert "checkpoint.landed" in constants
    assert DEPLOYMENTS["on-checkpoint"]["triggers"][0]["expect"] == ["checkpoint.landed"]
