"""Revocation and rotation commands: admin tokens, merchant API secrets, residents' sessions."""

from __future__ import annotations

import click

from voucher_service.cli import CliState, main, pass_state


@main.command("revoke-admin-token")
@click.option("--name", default=None, help="Revoke every live admin token with this name.")
@click.option("--token", default=None, help="Revoke this one admin token (e.g. a leaked one).")
@pass_state
def revoke_admin_token(state: CliState, name: str | None, token: str | None) -> None:
    """Revoke admin tokens by name or by value; they stop working at once. Exit 1 when none matched."""
    from voucher_service.services.credentials import revoke_admin_tokens

    if (name is None) == (token is None):
        raise click.UsageError("give exactly one of --name or --token")
    count = revoke_admin_tokens(state.ctx, name=name, token=token)
    click.echo(f"{count} admin token(s) revoked")
    if count == 0:
        raise SystemExit(1)


@main.command("rotate-merchant-secret")
@click.option("--merchant", "merchant_id", required=True, help="The merchant id (mch_...).")
@pass_state
def rotate_merchant_secret(state: CliState, merchant_id: str) -> None:
    """Give a merchant a new API secret, printed as the last line (shown once); the old one stops working."""
    from voucher_service.domain.errors import NotFound
    from voucher_service.services.credentials import rotate_merchant_secret as rotate

    try:
        secret = rotate(state.ctx, merchant_id, actor="cli:rotate-merchant-secret")
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"new API secret for {merchant_id} (shown once; servers drop the old one within 30 s):")
    click.echo(secret)


@main.command("end-sessions")
@click.option("--phone", required=True, help="The resident's mobile number.")
@pass_state
def end_sessions(state: CliState, phone: str) -> None:
    """End every session of a resident (all devices); they log in again with a new one-time code."""
    from voucher_service.domain.errors import ValidationFailed
    from voucher_service.services.consumers import normalise_phone, phone_holder
    from voucher_service.services.credentials import end_holder_sessions

    try:
        holder = phone_holder(state.ctx, normalise_phone(phone))
    except ValidationFailed as exc:
        raise click.BadParameter(str(exc), param_hint="--phone") from None
    epoch = end_holder_sessions(state.ctx, holder, actor="cli:end-sessions")
    click.echo(f"every session of that resident ended (session epoch {epoch})")
