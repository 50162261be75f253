"""Programme, demo and key commands."""

from __future__ import annotations

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
@click.option("--scale", type=click.FloatRange(min=0.0001, max=1.0), default=1.0, show_default=True,
              help="Scale the tiers' quantities down for a quicker seed.")
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
    click.echo(f"demo consumers (log in by SMS code): {', '.join(c['phone'] for c in out['consumers'])}")
    click.echo(f"written to {out['path']} (demo only: it holds secrets)")
    click.echo(f"admin_token: {out['admin_token']}")
