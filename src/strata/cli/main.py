"""The ``strata`` console command."""

from __future__ import annotations

import typer

from strata import __version__
from strata.cli import audit, cost, deploy, drift, keys, policies, quality, routes, secrets, traces
from strata.cli import datasets as datasets_cli
from strata.cli import evals as evals_cli
from strata.cli import lineage as lineage_cli
from strata.cli import models as models_cli
from strata.cli import slo as slo_cli
from strata.cli.up import up
from strata.cli.usage import usage

app = typer.Typer(name="strata", help="Strata: self-hosted AI infrastructure.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.command("up")(up)
app.command("usage")(usage)
app.add_typer(keys.app, name="keys")
app.add_typer(routes.app, name="routes")
app.command("deploy")(deploy.deploy)
app.add_typer(deploy.shadow_app, name="shadow")
app.add_typer(policies.limits_app, name="limits")
app.add_typer(policies.budgets_app, name="budgets")
app.add_typer(cost.app, name="cost")
app.add_typer(traces.app, name="traces")
app.add_typer(slo_cli.app, name="slo")
app.add_typer(quality.app, name="quality")
app.add_typer(audit.app, name="audit")
app.add_typer(secrets.app, name="secrets")
app.add_typer(drift.app, name="drift")
app.add_typer(datasets_cli.app, name="datasets")
app.add_typer(datasets_cli.pipelines_app, name="pipelines")
app.add_typer(lineage_cli.app, name="lineage")

app.add_typer(models_cli.app, name="models")
app.add_typer(evals_cli.app, name="evals")


@app.command("version")
def version() -> None:
    """Print Strata's version."""
    typer.echo(__version__)


def main() -> None:
    app()
