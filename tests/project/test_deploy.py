"""Every deployment file runs the real command: each is parsed, and the command it runs is
resolved against the CLI's own parser and the package's console-script entry point."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import liveness, webhooks, worker
from worker.cli.main import build_parser
from worker.runtime import heartbeat
from worker.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROGRAM = "inboxcheck"
HANDLERS = {"worker": worker.run, "health": liveness.run, "webhooks": webhooks.run}


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
    assert_runs(shlex.split(entries["webhooks"]), "webhooks")


def dockerfile_instructions() -> dict[str, str]:
    found: dict[str, str] = {}
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found[word.upper()] = rest.strip()  # the last one of each kind wins, as in docker
    return found


def assert_liveness(argv: list[str], process: str = "worker") -> None:
    """The probe that restarts a process asks about its own loop, not about Redis."""
    assert_runs(argv, "health")
    assert resolve(argv).liveness and resolve(argv).process == process, argv


def test_dockerfile_is_non_root_pinned_and_runs_the_worker() -> None:
    found = dockerfile_instructions()
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", found["FROM"]), found["FROM"]
    assert found["USER"] not in ("root", "0")
    assert_runs(json.loads(found["CMD"]), "worker")
    assert_liveness(json.loads(found["HEALTHCHECK"].split("CMD", 1)[1]))


def test_the_build_context_holds_no_secrets() -> None:
    """.dockerignore admits the package alone: deploy/.env (the sealing key) stays out."""
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert rules[0] == "*"
    assert {rule.lstrip("!").rstrip("/") for rule in rules if rule.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "jobs",
        "worker",
    }


def test_compose_runs_workers_against_its_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    worker = services["worker"]
    assert_runs(worker["command"], "worker")
    assert worker["healthcheck"]["test"][0] == "CMD"
    assert_liveness(worker["healthcheck"]["test"][1:])
    assert worker["environment"]["INBOXCHECK_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert "redis" in services and "redis" in worker["depends_on"]
    assert re.fullmatch(r"redis:7-alpine@sha256:[0-9a-f]{64}", services["redis"]["image"])
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert_runs(services["webhooks"]["command"], "webhooks")
    assert_liveness(services["webhooks"]["healthcheck"]["test"][1:], "webhooks")
    assert services["webhooks"]["environment"].keys() == worker["environment"].keys() - {
        "INBOXCHECK_MAX_JOBS"
    }


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
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert_runs(container["command"], "worker")
    assert_liveness(container["livenessProbe"]["exec"]["command"])
    readiness = container["readinessProbe"]["exec"]["command"]
    assert_runs(readiness, "health") and not resolve(readiness).liveness
    env = {item["name"]: item for item in container["env"]}
    secret = k8s("Secret")
    ref = env["INBOXCHECK_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert all(name.startswith(ENV_PREFIX) for name in env)
    assert env["INBOXCHECK_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
    metrics_port = int(env["INBOXCHECK_METRICS_PORT"]["value"])
    assert {"name": "metrics", "containerPort": metrics_port} in container["ports"]
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels().items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def pod_labels() -> dict[str, str]:
    return k8s("Deployment")["spec"]["template"]["metadata"]["labels"]


def test_kubernetes_egress_reaches_mail_ports_but_never_the_metadata_address() -> None:
    policy = k8s("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels().items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    blocks = [
        peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer
    ]
    metadata = ipaddress.ip_address("169.254.169.254")
    for block in blocks:
        if metadata in ipaddress.ip_network(block["cidr"]):
            assert any(metadata in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    # 443: OAuth2 token endpoints; 26379: Redis Sentinel
    assert {25, 465, 587, 143, 993, 443, 53, 6379, 26379} <= ports


def systemd_service(unit: str = "inboxcheck-worker.service") -> dict[str, list[str]]:
    """The [Service] section, every value of repeated keys kept (systemd adds them up)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / unit).read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("command", ["worker", "webhooks"])
def test_systemd_units_run_sandboxed(command: str) -> None:
    service = systemd_service(f"inboxcheck-{command}.service")
    assert_runs(shlex.split(service["ExecStart"][0]), command)
    setting = heartbeat.setting_name("worker" if command == "worker" else "webhooks")
    [beat] = [v for v in service["Environment"] if v.startswith(f"{setting}=")]
    assert beat.startswith(f"{setting}=/run/{service['RuntimeDirectory'][0]}/")
    assert service["User"] != ["root"]
    for key, value in {
        "NoNewPrivileges": "true",
        "PrivateDevices": "true",
        "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true",
        "ProtectKernelLogs": "true",
        "SystemCallFilter": "@system-service",
        "UMask": "0077",
        "LimitCORE": "0",
    }.items():
        assert value in service[key], key
    assert set(service["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["MemoryMax"]
    if command == "worker":  # the webhooks process never starts a Redis of its own
        assert "INBOXCHECK_START_LOCAL_REDIS=false" in service["Environment"]


DEPLOY_SETTINGS = sorted(
    {
        name
        for path in [*DEPLOY.rglob("*"), REPO / "Procfile"]
        if path.is_file()
        for name in re.findall(r"\bINBOXCHECK_[A-Z_]+", path.read_text())
    }
)


@pytest.mark.parametrize("name", DEPLOY_SETTINGS)
def test_deploy_settings_are_real_settings(name: str) -> None:
    assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields


def test_kubernetes_webhooks_reach_https_but_no_private_or_metadata_address() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "webhooks.yaml").read_text()))
    deployment, policy = (
        next(d for d in docs if d["kind"] == kind) for kind in ("Deployment", "NetworkPolicy")
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert_runs(container["command"], "webhooks")
    assert_liveness(container["livenessProbe"]["exec"]["command"], "webhooks")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    https = [
        rule for rule in policy["spec"]["egress"] if {"protocol": "TCP", "port": 443} in rule.get("ports", [])
    ]
    blocks = [peer["ipBlock"] for rule in https for peer in rule["to"]]
    for address in ("169.254.169.254", "10.1.2.3", "192.168.1.1", "100.100.100.200", "fd00:ec2::254"):
        ip = ipaddress.ip_address(address)
        for block in blocks:
            if ip.version == ipaddress.ip_network(block["cidr"]).version and ip in ipaddress.ip_network(
                block["cidr"]
            ):
                assert any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])), address
