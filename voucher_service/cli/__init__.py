"""voucher-admin: thin commands that parse arguments, call services and print."""

from __future__ import annotations

import sys
from typing import Any

import click

from voucher_service.config import ConfigurationError, Settings
from voucher_service.services.context import ServiceContext


class CliState:
    """Builds the service context lazily, so `--help` needs no database."""

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            try:
                self._ctx = ServiceContext.build(Settings.from_env())
            except ConfigurationError as exc:
                raise click.ClickException(str(exc)) from None
        return self._ctx

    def close(self) -> None:
        """Release the database connections when the command ends."""
        if self._ctx is not None:
            self._ctx.close()


pass_state = click.make_pass_decorator(CliState, ensure=True)


@click.group()
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """Administer the consumption-voucher service (reads the same VOUCHER_* variables as the server)."""
    click_ctx.call_on_close(click_ctx.ensure_object(CliState).close)


@main.command("init-db")
@pass_state
def init_db(state: CliState) -> None:
    """Create or migrate the schema and make sure signing keys exist; safe to run again."""
    from voucher_service.adapters.db.migrate import upgrade
    from voucher_service.services.keys import ensure_signing_keys

    upgrade(state.ctx.engine)
    created = ensure_signing_keys(state.ctx)
    click.echo(f"schema up to date; {created} signing key(s) created")


@main.command("create-admin-token")
@click.option("--name", required=True, help="Who the token is for (recorded in the audit log).")
@pass_state
def create_admin_token(state: CliState, name: str) -> None:
    """Print a new admin bearer token (last line of stdout); only its hash is stored."""
    from voucher_service.services.credentials import create_admin_token as create

    token = create(state.ctx, name)
    click.echo(f"admin token for {name} (shown once):")
    click.echo(token)


def run(args: list[str] | None = None, **kwargs: Any) -> int:
    """Run the CLI and return its exit code (for scripts/ wrappers)."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of raising SystemExit.
        result = main.main(args=args, standalone_mode=False, **kwargs)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2 if exc.exit_code in (1, 2) else exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    return result if isinstance(result, int) else 0


# Commands of each area live in their own module and attach themselves to `main`.
from voucher_service.cli import admin, books, credentials, pages, registry  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
