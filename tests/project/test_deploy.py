"""Every deployment file runs the real command: each is parsed, and the command it runs is
resolved against the CLI's own parser and the package's console-script entry point."""

from __future__ import annotations

import argparse
import configparser
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import liveness, worker
from worker.cli.main import build_parser
from worker.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROGRAM = "inboxcheck"
HANDLERS = {"worker": worker.run, "health": liveness.run}


def resolve(argv: list[str]) -> argparse.Namespace:
    """The command as the installed `inboxcheck` script would run it."""
    assert Path(argv[0]).name == PROGRAM, argv
    return build_parser().parse_args(argv[1:])


def assert_runs(argv: list[str], command: str) -> None:
    args = resolve(argv)
    assert args.command == command and args.handler is HANDLERS[command], argv


def test_console_script_is_the_cli() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[PROGRAM] == "worker.cli.main:main"


def test_procfile_names_the_worker() -> None:
    entries = dict(
        line.split(":", 1)
        for line in (REPO / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert_runs(shlex.split(entries["worker"]), "worker")


def dockerfile_instructions() -> dict[str, str]:
    found: dict[str, str] = {}
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found[word.upper()] = rest.strip()  # the last one of each kind wins, as in docker
    return found


def test_dockerfile_is_non_root_and_runs_the_worker() -> None:
    found = dockerfile_instructions()
    assert found["FROM"].endswith("-slim")
    assert found["USER"] not in ("root", "0")
    assert_runs(json.loads(found["CMD"]), "worker")
    assert_runs(json.loads(found["HEALTHCHECK"].split("CMD", 1)[1]), "health")


def test_compose_runs_workers_against_its_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    worker = services["worker"]
    assert_runs(worker["command"], "worker")
    assert worker["healthcheck"]["test"][0] == "CMD"
    assert_runs(worker["healthcheck"]["test"][1:], "health")
    assert worker["environment"]["INBOXCHECK_REDIS_URL"].startswith("redis://redis:")
    assert "redis" in services and "redis" in worker["depends_on"]


def k8s(kind: str) -> dict[str, Any]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                return doc
    raise AssertionError(f"no {kind} in deploy/k8s")


def test_kubernetes_deployment_probe_secret_and_metrics_service() -> None:
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert_runs(container["command"], "worker")
    assert_runs(container["livenessProbe"]["exec"]["command"], "health")
    env = {item["name"]: item for item in container["env"]}
    secret = k8s("Secret")
    ref = env["INBOXCHECK_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert all(name.startswith(ENV_PREFIX) for name in env)
    metrics_port = int(env["INBOXCHECK_METRICS_PORT"]["value"])
    assert {"name": "metrics", "containerPort": metrics_port} in container["ports"]
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels().items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def pod_labels() -> dict[str, str]:
    return k8s("Deployment")["spec"]["template"]["metadata"]["labels"]


def test_systemd_unit_runs_the_worker() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign] - systemd keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "inboxcheck-worker.service")
    assert_runs(shlex.split(unit["Service"]["ExecStart"]), "worker")
    assert unit["Service"]["User"] != "root"


@pytest.mark.parametrize("name", ["INBOXCHECK_METRICS_PORT", "INBOXCHECK_METRICS_HOST"])
def test_deploy_settings_are_real_settings(name: str) -> None:
    assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields
