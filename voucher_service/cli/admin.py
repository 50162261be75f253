"""Programme, demo and key commands."""

from __future__ import annotations

import sys

import click

from voucher_service.cli import CliState, main, pass_state


@main.command("rotate-keys")
@pass_state
def rotate_keys(state: CliState) -> None:
    """Retire the active signing key, promote the published next key, and publish a new next key."""
    from voucher_service.services.keys import rotate_keys as rotate

    result = rotate(state.ctx, actor="cli:rotate-keys")
    for role in ("retired", "active", "next"):
        click.echo(f"{role}: {result[role] or '-'}")


@main.command("demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when a programme exists already (for `make run`).")
@click.option(
    "--scale",
    type=click.FloatRange(min=0.0001, max=1.0),
    default=1.0,
    show_default=True,
    help="Scale the tiers' quantities down for a quicker seed.",
)
@pass_state
def demo(state: CliState, if_empty: bool, scale: float) -> None:
    """Seed a realistic demo programme (Longgang's, open from today), its merchants and a few claims."""
    from voucher_service.services.demo import has_programme, seed_demo

    if if_empty and has_programme(state.ctx):
        click.echo("a programme exists already; demo not seeded (--if-empty)")
        return
    out = seed_demo(state.ctx, scale=scale)
    click.echo(out["registry_note"])
    click.echo(f"program_id: {out['program_id']}")
    for m in out["merchants"]:
        kind = "platform" if m["platform"] else "/".join(m["channels"])
        click.echo(f"merchant {m['id']} ({m['name']}, {kind}) api_secret: {m['api_secret']}")
    for c in out["cashiers"]:
        click.echo(
            f"cashier of {c['merchant_id']} ({c['merchant_name']}) at /checkout: "
            f"username {c['username']} password {c['password']}"
        )
    click.echo(f"demo consumers (log in by SMS code): {', '.join(c['phone'] for c in out['consumers'])}")
    click.echo(f"written to {out['path']} (demo only: it holds secrets)")
    click.echo(f"admin_token: {out['admin_token']}")


@main.command("create-staff")
@click.option("--merchant", "merchant_id", required=True, help="The merchant the staff member works for.")
@click.option(
    "--username", required=True, help="3-64 of a-z, 0-9, '.', '_', '-' (normalised: NFKC, lower case)."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--generate-password", is_flag=True, help="Generate a password and print it as the last line.")
@pass_state
def create_staff(
    state: CliState, merchant_id: str, username: str, password_stdin: bool, generate_password: bool
) -> None:
    """Create a staff account (a cashier who logs in to /checkout); without a flag, prompt for its password."""
    from voucher_service.domain.errors import VoucherServiceError
    from voucher_service.services import staff

    if password_stdin and generate_password:
        raise click.UsageError("give at most one of --password-stdin and --generate-password")
    if generate_password:
        password = staff.generate_password()
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        out = staff.create_staff(state.ctx, merchant_id, username, password, actor="cli:create-staff")
    except VoucherServiceError as exc:
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in exc.extra.get("errors", []))
        raise click.ClickException(f"{exc.detail} {problems}".strip()) from None
    click.echo(f"staff {out['id']} {out['username']} of merchant {out['merchant_id']} created")
    if generate_password:
        click.echo("password (shown once):")
        click.echo(password)
