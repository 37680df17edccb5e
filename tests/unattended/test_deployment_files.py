"""crontab.example, the Kubernetes manifests, the Dockerfile and docker-compose.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.commands.support import EXIT_INTERNAL
from jobs.registry import JOBS
from reconcile.errors import (
    EXIT_ACTIONS_FAILED,
    EXIT_CONFIG,
    EXIT_DELIVERY_FAILED,
    EXIT_FINDINGS,
    EXIT_LOCKED,
    EXIT_STRIPE,
    EXIT_USERDB,
)
from reconcile.listing.checkpoints import RunInterrupted
from reconcile.rules.crontab import parse_crontab
from reconcile.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "k8s"
COMPONENT = "app.kubernetes.io/component"


# A subset of kustomize (no kubectl here): what config/k8s uses, and a failure for
# anything else, so a manifest using more is not checked against a wrong rendering.
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "nameSuffix", "patches", "images"}


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch as Kubernetes applies it to these fields: maps merge, lists of
    named objects (containers, env, volumes, mounts) merge by name, other lists are replaced,
    and a null deletes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _merge(base[key], value) if key in base else value
        return merged
    named = (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    )
    if named:
        merged_list = list(base)
        positions = {item["name"]: n for n, item in enumerate(base)}
        for item in patch:
            if item["name"] in positions:
                at = positions[item["name"]]
                merged_list[at] = _merge(merged_list[at], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def _set_images(resource: dict[str, Any], images: list[dict[str, str]]) -> None:
    if resource["kind"] != "CronJob":
        return
    pod = resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for container in pod["containers"]:
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize folder` prints, as objects."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    assert not unknown, f"{folder}: the test's renderer does not know {unknown}"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources += render(path)
        else:
            for doc in yaml.safe_load_all(path.read_text()):
                assert doc is not None, f"{path.name} has an empty document"
                resources.append(doc)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path", "target"}, f"{folder}: patches need a path and a target"
        assert set(patch["target"]) == {"kind"}, f"{folder}: the renderer selects by kind only"
        body = yaml.safe_load((folder / patch["path"]).read_text())
        targets = [r for r in resources if r["kind"] == patch["target"]["kind"]]
        assert targets, f"{folder}: {patch['path']} patches nothing"
        for target in targets:
            # A patch with a target applies whatever name it carries.
            metadata = {k: v for k, v in body["metadata"].items() if k != "name"}
            merged = _merge(target, {**body, "metadata": metadata})
            target.clear()
            target.update(merged)
    suffix = kustomization.get("nameSuffix", "")
    for resource in resources:
        resource["metadata"]["name"] += suffix
        _set_images(resource, kustomization.get("images", []))
    return resources


def manifests() -> list[dict[str, Any]]:
    found = render(K8S)
    names = [(m["kind"], m["metadata"]["name"]) for m in found]
    assert len(names) == len(set(names)), "two manifests of one kind share a name"
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
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][:2] == ["run", cronjob["metadata"]["labels"][COMPONENT]]
    assert "--resume" in container["args"]
    assert job["template"]["metadata"]["labels"][COMPONENT] == container["args"][1]
    assert cronjob["metadata"]["name"] == f"stripe-reconcile-{container['args'][1]}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "STRIPE_SECRET_KEY" not in env  # never a key in a manifest
    assert "STRIPE_RECONCILE_USERDB_URL" not in env  # nor the user DB's password
    key_file = Path(env["STRIPE_SECRET_KEY_FILE"])
    userdb_url_file = Path(env["STRIPE_RECONCILE_USERDB_URL_FILE"])
    config_file = Path(env["STRIPE_RECONCILE_CONFIG"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[str(key_file.parent)]]["secret"]["secretName"] == "stripe-reconcile-key"
    assert (
        volumes[mounts[str(userdb_url_file.parent)]]["secret"]["secretName"]
        == "stripe-reconcile-userdb"
    )
    assert (
        volumes[mounts[str(config_file.parent)]]["configMap"]["name"] == "stripe-reconcile-config"
    )
    assert "persistentVolumeClaim" in volumes[mounts["/data"]]  # the reports' volume


def _exit_codes(rules: list[dict[str, Any]], action: str) -> set[int]:
    return {
        code
        for rule in rules
        if rule["action"] == action and "onExitCodes" in rule
        for code in rule["onExitCodes"]["values"]
    }


@pytest.mark.parametrize("cronjob", cronjobs(), ids=lambda c: c["metadata"]["name"])
def test_retry_policy_follows_the_exit_codes(cronjob: dict[str, Any]) -> None:
    job = cronjob["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    # What a retry cannot change fails the Job at once.
    assert _exit_codes(rules, "FailJob") == {
        EXIT_FINDINGS,
        EXIT_CONFIG,
        EXIT_USERDB,
        EXIT_ACTIONS_FAILED,
        EXIT_DELIVERY_FAILED,
        EXIT_INTERNAL,
    }
    # Stripe or Redis unreachable, a lock still held by a dead run, a stop by SIGTERM:
    # retried (with --resume, so the retry continues), within backoffLimit.
    retried = {EXIT_STRIPE, EXIT_LOCKED, RunInterrupted.exit_code}
    assert retried <= _exit_codes(rules, "Count")
    assert not retried & _exit_codes(rules, "FailJob")
    assert job["backoffLimit"] >= 3
    # A node drained or a pod preempted is not the run's failure.
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == "stripe-reconcile"
            assert rule["onExitCodes"]["operator"] == "In"
    # The runner's lease ([resume] lease_seconds, 45 s) expires before the retries run out
    # (10 + 20 + 40 s of back-off), so a retried pod takes a killed run over.
    (configmap,) = [m for m in manifests() if m["kind"] == "ConfigMap"]
    lease = tomllib.loads(configmap["data"]["config.toml"])["resume"]["lease_seconds"]
    assert lease <= sum(10 * 2**n for n in range(job["backoffLimit"] - 1))
    pod = job["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30  # time to store the page in hand


def test_the_cronjob_is_written_once_and_each_job_patches_only_what_differs() -> None:
    # Only the base holds a whole CronJob (a pod with its image); the jobs hold patches.
    whole = [
        path.relative_to(K8S)
        for path in sorted(K8S.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CronJob" and "image: " in path.read_text()
    ]
    assert whole == [Path("base/cronjob.yaml")]
    (base,) = render(K8S / "base")
    for cronjob in cronjobs():
        job = cronjob["metadata"]["labels"][COMPONENT]
        # The same CronJob once the parts a job may set are taken out of both.
        assert _without_job_parts(cronjob) == _without_job_parts(base), job


def _without_job_parts(cronjob: dict[str, Any]) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(cronjob))
    copy["metadata"].pop("name")
    copy["metadata"]["labels"].pop(COMPONENT, None)
    copy["spec"].pop("schedule")
    job = copy["spec"]["jobTemplate"]["spec"]
    job.pop("activeDeadlineSeconds")
    job["template"]["metadata"]["labels"].pop(COMPONENT, None)
    job["template"]["spec"]["containers"][0].pop("args")
    result: dict[str, Any] = copy
    return result


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
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", dockerfile, re.M)
    assert stages
    names = {name for _, name in stages if name}
    # Every image pulled from outside is a pinned slim Python; the others are earlier stages.
    pulled = [base for base, _ in stages if base not in names]
    assert all(re.match(r"python:\d+\.\d+\.\d+-slim", base) for base in pulled)
    # A plain `docker build .` builds the last stage: production, without the sandbox.
    production = dockerfile.split("\nFROM ")[-1]
    assert production.startswith("runtime AS production")
    assert "COPY --from=build " in production
    assert "sandbox" not in production.split("\n", 1)[1]
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
