"""Certified-product registry commands: import-products, approve-sku, reject-sku."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from voucher_service.cli import CliState, main, pass_state
from voucher_service.domain.errors import NotFound, ValidationFailed

MAX_ERRORS_SHOWN = 50


class InputError(click.ClickException):
    """The input could not be used (exit code 2, as for the other admin commands)."""

    exit_code = 2


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (KeyError, OSError):  # no login name in some containers
        return "cli:unknown"


@main.command("import-products")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_state
def import_products(state: CliState, file: Path) -> None:
    """Load the certified-product registry from FILE.csv (CONTRACT §5); a bad row imports nothing."""
    from voucher_service.services.registry import import_products as run_import

    try:
        result = run_import(state.ctx, file, _actor())
    except ValidationFailed as exc:
        errors = exc.extra.get("errors", [])
        lines = [f"{file}: {len(errors)} problem(s); nothing was imported"]
        lines += [
            f"  line {e['line']}, field {e['field']}: {e['message']}" for e in errors[:MAX_ERRORS_SHOWN]
        ]
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
        raise InputError("\n".join(lines)) from None
    except (OperationalError, ProgrammingError) as exc:
        raise InputError(
            f"the database is not ready (run `voucher-admin init-db` first?): {exc.orig}"
        ) from None
    click.echo(
        f"created={result.created} updated={result.updated} unchanged={result.unchanged} total={result.total}"
    )
    if result.restamped:
        click.echo(f"restamped={result.restamped} (products of renamed suppliers not listed in the file)")
    if result.registry_version is None:
        click.echo("registry unchanged")
    else:
        click.echo(f"registry version {result.registry_version}")


@main.command("approve-sku")
@click.option("--merchant", "merchant_id", required=True, help="The merchant id.")
@click.option("--sku", required=True, help="The merchant's own SKU.")
@click.option(
    "--certification-no",
    default=None,
    help="Create (or replace) the mapping to this product, approved at once, without a request.",
)
@pass_state
def approve_sku(state: CliState, merchant_id: str, sku: str, certification_no: str | None) -> None:
    """Approve a merchant's SKU -> certified product mapping, so the SKU counts at checkout."""
    _decide(state, merchant_id, sku, certification_no, approve=True)


@main.command("reject-sku")
@click.option("--merchant", "merchant_id", required=True, help="The merchant id.")
@click.option("--sku", required=True, help="The merchant's own SKU.")
@pass_state
def reject_sku(state: CliState, merchant_id: str, sku: str) -> None:
    """Reject a mapping (or withdraw its approval): the SKU no longer counts at checkout."""
    _decide(state, merchant_id, sku, None, approve=False)


def _decide(
    state: CliState, merchant_id: str, sku: str, certification_no: str | None, *, approve: bool
) -> None:
    from voucher_service.services.sku_mappings import decide_mapping

    try:
        mapping = decide_mapping(
            state.ctx, merchant_id, sku, approve=approve, actor=_actor(), certification_no=certification_no
        )
    except (NotFound, ValidationFailed) as exc:
        raise InputError(exc.detail) from None
    click.echo(
        f"{mapping['merchant_id']} {mapping['sku']} -> {mapping['certification_no']}: {mapping['status']}"
    )
