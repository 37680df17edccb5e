"""crontab.example, the Kubernetes manifests, the Dockerfile and docker-compose.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.registry import JOBS
from reconcile.crontab import parse_crontab
from reconcile.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "k8s"


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is not None, f"{path.name} has an empty document"
            found.append(doc)
    return found


def cronjobs() -> list[dict[str, Any]]:
    return [m for m in manifests() if m["kind"] == "CronJob"]


def test_every_known_job_has_a_cronjob_and_a_crontab_line() -> None:
    commands = {
        tuple(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][:2])
        for c in cronjobs()
    }
    crontab = (ROOT / "crontab.example").read_text()
    for name in JOBS:
        assert ("run", name) in commands, f"config/k8s has no CronJob for {name}"
        assert re.search(rf"^\S+ \S+ \S+ \S+ \S+ \S*stripe-reconcile run {name} ", crontab, re.M), (
            f"crontab.example has no line for {name}"
        )


def test_crontab_lines_parse_and_log_to_a_file() -> None:
    lines = [
        line
        for line in (ROOT / "crontab.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) >= len(JOBS)
    for line in lines:
        fields = line.split()
        parse_crontab(" ".join(fields[:5]))
        assert "--resume" in fields
        assert re.search(r">> /var/log/stripe-reconcile/\S+\.log 2>&1$", line), line
    assert "flock" in (ROOT / "crontab.example").read_text()  # the comment says why not


@pytest.mark.parametrize("cronjob", cronjobs(), ids=lambda c: c["metadata"]["name"])
def test_cronjob_fields(cronjob: dict[str, Any]) -> None:
    spec = cronjob["spec"]
    assert cronjob["apiVersion"] == "batch/v1"
    parse_crontab(spec["schedule"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 86_400
    job = spec["jobTemplate"]["spec"]
    assert 0 <= job["backoffLimit"] <= 6
    assert job["activeDeadlineSeconds"] > 0
    rules = job["podFailurePolicy"]["rules"]
    assert {1, 2, 5} <= set(rules[0]["onExitCodes"]["values"])  # retries cannot fix these
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert "--resume" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "STRIPE_SECRET_KEY" not in env  # never a key in a manifest
    key_file = Path(env["STRIPE_SECRET_KEY_FILE"])
    config_file = Path(env["STRIPE_RECONCILE_CONFIG"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[str(key_file.parent)]]["secret"]["secretName"] == "stripe-reconcile-key"
    assert (
        volumes[mounts[str(config_file.parent)]]["configMap"]["name"] == "stripe-reconcile-config"
    )
    assert "persistentVolumeClaim" in volumes[mounts["/data"]]  # the reports' volume


def test_configmap_holds_a_valid_configuration_with_reports_on_the_volume(tmp_path: Path) -> None:
    (configmap,) = [m for m in manifests() if m["kind"] == "ConfigMap"]
    path = tmp_path / "config.toml"
    path.write_text(configmap["data"]["config.toml"])
    settings = load_settings(path, env={})
    assert str(settings.reports.out).startswith("/data")
    (claim,) = [m for m in manifests() if m["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "stripe-reconcile-data"


def test_compose_runs_stripe_mock_postgres_and_a_trial() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["stripe-mock"]["image"].startswith("stripe/stripe-mock")
    assert services["postgres"]["image"].startswith("postgres:")
    trial = services["stripe-reconcile"]
    mounted = trial["volumes"][0].split(":")[0]
    settings = load_settings(ROOT / mounted, env={})
    assert settings.userdb.url.startswith("postgresql+psycopg://")
    assert set(settings.schedule.jobs) <= set(JOBS)


def test_dockerfile_is_slim_non_root_and_pinned() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert bases
    assert all(re.match(r"python:\d+\.\d+\.\d+-slim", b) for b in bases)
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert "-r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        "==" in line
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, (
            f"{name} is a dependency but not pinned in requirements.lock: regenerate it "
            "(see its first lines)"
        )
