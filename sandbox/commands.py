"""`stripe-reconcile sandbox` and `stripe-reconcile demo`.

They reach the CLI through the `stripe_reconcile.commands` entry-point group (see
pyproject.toml), so the product never imports this package. The CLI imports this module to
list the commands in `--help`: it stays light, and the server, the seeding and the jobs are
imported only when a command runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from jobs.commands.support import out_option

# Without the `sandbox` extra the CLI should say how to install it, not fail on first use.
if importlib.util.find_spec("aiohttp") is None:
    raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")

__all__ = ["demo", "sandbox"]


@click.command()
@click.option("--customers", default=3000, show_default=True, help="Customers to seed.")
@click.option("--seed", default=7, show_default=True, help="Seed of the generated account.")
@out_option
def demo(customers: int, seed: int, out_dir: Path | None) -> None:
    """Start the sandbox, seed an account with planted anomalies, run every read-only job."""
    if customers < 50 or customers > 200_000:
        raise click.BadParameter("must be between 50 and 200000", param_hint="--customers")
    from sandbox.demo import run_demo

    run_demo(customers=customers, seed=seed, out_dir=out_dir or Path("output"), echo=click.echo)


@click.command()
@click.option("--port", default=12111, show_default=True, help="Port to listen on (0 = any).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--seed-customers", default=0, show_default=True, help="Seed test mode.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated account.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every response.")
@click.option("--jitter-ms", default=0.0, show_default=True, help="Random extra latency, 0..N.")
@click.option("--no-rate-limits", is_flag=True, help="Never answer 429.")
@click.option(
    "--users-db",
    default=None,
    help=(
        "With --seed-customers: write the matching users table here (SQLite path or URL); "
        "a users table an earlier run wrote is reseeded, any other is left alone."
    ),
)
@click.option(
    "--ground-truth",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --seed-customers: write the planted anomalies here (JSON).",
)
def sandbox(
    port: int,
    host: str,
    seed_customers: int,
    seed: int,
    latency_ms: float,
    jitter_ms: float,
    no_rate_limits: bool,
    users_db: str | None,
    ground_truth: Path | None,
) -> None:
    """Serve the Stripe-compatible sandbox in the foreground (Ctrl-C stops it)."""
    if not 0 <= port <= 65535:
        raise click.BadParameter("must be between 0 and 65535", param_hint="--port")
    if seed_customers < 0 or latency_ms < 0 or jitter_ms < 0:
        raise click.BadParameter("must not be negative", param_hint="--seed-customers/--latency-ms")
    if (users_db or ground_truth) and not seed_customers:
        raise click.BadParameter("needs --seed-customers N", param_hint="--users-db/--ground-truth")
    from sandbox.ratelimit import RateLimits
    from sandbox.runner import SandboxConfig, serve_forever

    serve_forever(
        SandboxConfig(
            host=host,
            port=port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            seed_customers=seed_customers,
            seed=seed,
            limits=RateLimits(enabled=not no_rate_limits),
            users_db=users_db,
            ground_truth_path=ground_truth,
        )
    )
