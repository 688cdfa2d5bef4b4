"""docker-compose.yml resolves, and wires the stack in the order the services need.

Runs `docker compose config`, which parses and interpolates the file without a Docker engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"postgres", "redis", "neo4j", "migrate", "api", "worker"}
APP_SERVICES = ("migrate", "api", "worker")


def _compose_command() -> list[str]:
    """The Compose v2 CLI: the `docker compose` plugin, else a standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed (needed for `docker compose config`)")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        version = subprocess.run(
            [standalone, "version", "--short"], capture_output=True, text=True, check=False
        )
        if version.returncode == 0 and not version.stdout.strip().startswith("1."):
            return [standalone]
    pytest.skip(
        "docker is installed but Compose v2 is not (`docker compose version` failed: "
        f"{' '.join((probe.stderr or probe.stdout).split())[:200]})"
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = subprocess.run(
        [*_compose_command(), "-f", "docker-compose.yml", "config",
         "--format", "json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_declares_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES

    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["neo4j"]["image"].startswith("neo4j:5")

    # Migrations run once, to completion, before anything that talks to the database.
    migrate = services["migrate"]
    assert migrate["command"] == ["anamnesis", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        for store in ("postgres", "redis", "neo4j"):
            assert depends_on[store]["condition"] == "service_healthy"

    # Every long-running service says when it is healthy; the one-shot job needs no probe.
    for name, service in services.items():
        if name == "migrate":
            continue
        healthcheck = service.get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck.get("test"), f"{name}'s healthcheck has no test"
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])

    api_ports = services["api"]["ports"]
    assert any(str(p.get("published")) == "8420" and p["target"] == 8420 for p in api_ports)


def test_app_services_share_one_configuration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    envs = [services[name]["environment"] for name in APP_SERVICES]
    assert envs[0] == envs[1] == envs[2]
    env = envs[0]
    assert env["ANAMNESIS_DB__URL"].startswith("postgresql+asyncpg://anamnesis:")
    assert env["ANAMNESIS_DB__URL"].endswith("@postgres:5432/anamnesis")
    assert env["ANAMNESIS_DB__MIGRATE_ON_START"] == "false"
    assert env["ANAMNESIS_REDIS__URL"] == "redis://redis:6379/0"
    assert env["ANAMNESIS_NEO4J__URL"] == "bolt://neo4j:7687"
    assert env["ANAMNESIS_NEO4J__USER"]
    assert env["ANAMNESIS_NEO4J__PASSWORD"]
    assert env["ANAMNESIS_DATA_DIR"] == "/data"

    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "migrate, api and worker must run the same image"
    for name in APP_SERVICES:
        assert any(v["target"] == "/data" for v in services[name]["volumes"])
