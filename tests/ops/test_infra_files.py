"""The container recipe and the GPU work-pool job templates: well formed, every placeholder
declared, a GPU requested. Checked, not run (no docker or cluster here)."""

from __future__ import annotations

import json
import re

import pytest
from prefect.utilities.templating import apply_values

from conftest import REPO

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def placeholders(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(placeholders(v) for v in node)) if node else set()
    return set(PLACEHOLDER.findall(node)) if isinstance(node, str) else set()


def render(template: dict) -> dict:
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    return apply_values(template["job_configuration"], defaults | {"command": "prefect flow-run execute"})


@pytest.mark.parametrize("name", ["k8s-gpu-job-template.json", "docker-gpu-job-template.json"])
def test_every_placeholder_is_a_declared_variable(name):
    template = json.loads((REPO / "infra" / name).read_text())
    assert set(template) == {"job_configuration", "variables"}
    declared = set(template["variables"]["properties"])
    assert placeholders(template["job_configuration"]) <= declared
    assert {"command", "env", "image", "gpus"} <= declared
    rendered = json.dumps(render(template))
    assert "{{" not in rendered


def test_kubernetes_job_requests_a_gpu():
    job = render(json.loads((REPO / "infra" / "k8s-gpu-job-template.json").read_text()))["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["image"] == "gen4gen:latest" and container["args"] == "prefect flow-run execute"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_docker_container_requests_a_gpu():
    config = render(json.loads((REPO / "infra" / "docker-gpu-job-template.json").read_text()))
    (request,) = config["container_create_kwargs"]["device_requests"]
    assert request["Driver"] == "nvidia" and request["Count"] == 1 and request["Capabilities"] == [["gpu"]]


def test_dockerfile_installs_the_factory_from_this_repo():
    lines = [ln.strip() for ln in (REPO / "infra" / "Dockerfile").read_text().splitlines()]
    instructions = []
    for ln in lines:  # join continued lines, drop comments
        if not ln or ln.startswith("#"):
            continue
        if instructions and instructions[-1].endswith("\\"):
            instructions[-1] = instructions[-1][:-1] + " " + ln
        else:
            instructions.append(ln)
    known = {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "USER", "CMD", "ARG", "LABEL", "EXPOSE", "ENTRYPOINT"}
    assert instructions[0].startswith("FROM ")
    assert all(i.split()[0] in known for i in instructions), instructions
    for copy in (i.split()[1:-1] for i in instructions if i.startswith("COPY ")):
        assert all((REPO / src).exists() for src in copy), copy
    packages = {p for p in ("flows", "tasks", "models", "infra") if any(i.startswith(f"COPY {p} ") for i in instructions)}
    assert packages == {"flows", "tasks", "models", "infra"}
    assert any("git" in i for i in instructions if i.startswith("RUN apt-get"))  # the pull step clones
    assert not any(k in " ".join(instructions) for k in ("AWS_SECRET", "AWS_ACCESS_KEY"))
