"""Shared pieces of the reliability suite: configuration files, CLI calls, leftovers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click.testing
from click.testing import CliRunner

from jobs.commands.cli import cli
from tests.seeded import TEST_KEY, SeededWorld

__all__ = [
    "FAST_RETRIES",
    "base_sections",
    "env_for",
    "error_lines",
    "files_under",
    "invoke",
    "render_toml",
    "sha256_of",
    "write_config",
]

# Backoff shortened through the settings knob, so retries cost milliseconds in tests.
FAST_RETRIES: dict[str, Any] = {"max_retries": 3, "retry_initial_delay": 0.005}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(key)} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def base_sections(world: SeededWorld, out: Path) -> dict[str, dict[str, Any]]:
    """The world's settings as TOML sections, with fast retries."""
    settings = world.settings
    return {
        "stripe": dict(FAST_RETRIES),
        "userdb": {"url": settings.userdb.url, "scope": dict(settings.userdb.scope)},
        "state": {"url": settings.state.url},
        "reports": {"out": str(out)},
    }


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    path.write_text(render_toml(sections), encoding="utf-8")
    return path


def env_for(world: SeededWorld, key: str | None = TEST_KEY) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "STRIPE_API_BASE": world.sandbox.url,
        "STRIPE_RECONCILE_CONFIG": None,
        "STRIPE_SECRET_KEY_FILE": None,
        "STRIPE_SECRET_KEY": key,
    }
    return env


def invoke(args: list[str], env: Mapping[str, str | None]) -> click.testing.Result:
    return CliRunner().invoke(cli, args, env=dict(env), catch_exceptions=False)


def error_lines(result: click.testing.Result) -> list[str]:
    """The lines meant for a person: ours (`stripe-reconcile: error: ...`) or click's usage
    errors (`Error: ...`); JSON log lines are not among them."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("stripe-reconcile:", "Error:"))
    ]


def files_under(folder: Path) -> list[Path]:
    """Every file and folder below `folder` (hidden staging folders included)."""
    if not folder.exists():
        return []
    return sorted(folder.rglob("*"))


def sha256_of(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
