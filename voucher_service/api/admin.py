"""Programmes, merchants, enrolments and terminals (admin; terminals also by the merchant itself)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from voucher_service.api.admin_schemas import (
    EnrolmentIn,
    EnrolmentOut,
    MerchantIn,
    MerchantOut,
    MerchantSecretOut,
    ProgramIn,
    ProgramList,
    ProgramOut,
    StaffIn,
    StaffList,
    StaffOut,
    TerminalIn,
    TerminalOut,
)
from voucher_service.api.auth import Principal, service_context
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import credentials, merchants, programs, staff

bp = Blueprint("admin", __name__, url_prefix="/api/v1")
AUTH_ERRORS = ("unauthorized", "forbidden")


@endpoint(
    bp,
    "/programs",
    "POST",
    auth="admin",
    summary="Create a draft programme",
    body=ProgramIn,
    responses={201: ProgramOut},
    errors=(*AUTH_ERRORS, "validation_error", "budget_exceeded"),
)
def create_program(principal: Principal, body: ProgramIn) -> Response:
    return json_response(programs.create_program(service_context(), body.to_spec(), principal.actor), 201)


@endpoint(
    bp,
    "/programs",
    "GET",
    auth="admin",
    summary="List programmes",
    responses={200: ProgramList},
    errors=AUTH_ERRORS,
)
def list_programs(principal: Principal) -> Response:
    return json_response({"programs": programs.list_programs(service_context())})


@endpoint(
    bp,
    "/programs/<program_id>",
    "GET",
    auth="admin",
    summary="A programme with its statistics",
    responses={200: ProgramOut},
    errors=(*AUTH_ERRORS, "not_found"),
)
def get_program(principal: Principal, program_id: str) -> Response:
    return json_response(programs.get_program(service_context(), program_id))


@endpoint(
    bp,
    "/programs/<program_id>/activate",
    "POST",
    auth="admin",
    summary="Activate a programme (the first activation mints its voucher pool)",
    responses={200: ProgramOut},
    errors=(*AUTH_ERRORS, "not_found", "invalid_state"),
)
def activate_program(principal: Principal, program_id: str) -> Response:
    return json_response(programs.activate_program(service_context(), program_id, principal.actor))


@endpoint(
    bp,
    "/programs/<program_id>/suspend",
    "POST",
    auth="admin",
    summary="Suspend a programme",
    responses={200: ProgramOut},
    errors=(*AUTH_ERRORS, "not_found", "invalid_state"),
)
def suspend_program(principal: Principal, program_id: str) -> Response:
    return json_response(programs.suspend_program(service_context(), program_id, principal.actor))


@endpoint(
    bp,
    "/programs/<program_id>/merchants",
    "POST",
    auth="admin",
    summary="Enrol a merchant",
    body=EnrolmentIn,
    responses={201: EnrolmentOut, 200: EnrolmentOut},
    errors=(*AUTH_ERRORS, "validation_error", "not_found"),
)
def enrol_merchant(principal: Principal, program_id: str, body: EnrolmentIn) -> Response:
    out, created = merchants.enrol_merchant(service_context(), program_id, body.merchant_id, principal.actor)
    return json_response(out, 201 if created else 200)


@endpoint(
    bp,
    "/merchants",
    "POST",
    auth="admin",
    summary="Create a merchant (its API secret is shown once)",
    body=MerchantIn,
    responses={201: MerchantOut},
    errors=(*AUTH_ERRORS, "validation_error"),
)
def create_merchant(principal: Principal, body: MerchantIn) -> Response:
    out = merchants.create_merchant(
        service_context(), body.name, list(body.channels), body.platform, principal.actor
    )
    return json_response(out, 201)


@endpoint(
    bp,
    "/merchants/<merchant_id>",
    "GET",
    auth="admin",
    summary="A merchant",
    responses={200: MerchantOut},
    errors=(*AUTH_ERRORS, "not_found"),
)
def get_merchant(principal: Principal, merchant_id: str) -> Response:
    return json_response(merchants.get_merchant(service_context(), merchant_id))


@endpoint(
    bp,
    "/merchants/<merchant_id>/secret",
    "POST",
    auth="admin",
    summary="Rotate a merchant's API secret: the new one is returned once, the old one stops working",
    responses={200: MerchantSecretOut},
    errors=(*AUTH_ERRORS, "not_found"),
)
def rotate_merchant_secret(principal: Principal, merchant_id: str) -> Response:
    ctx = service_context()
    secret = credentials.rotate_merchant_secret(ctx, merchant_id, principal.actor)
    current_app.extensions["voucher_merchants"].forget(merchant_id)
    return json_response({"merchant_id": merchant_id, "api_secret": secret})


@endpoint(
    bp,
    "/merchants/<merchant_id>/terminals",
    "POST",
    auth="admin_or_merchant",
    summary="Register an offline terminal's public key (EC P-256 JWK)",
    body=TerminalIn,
    responses={201: TerminalOut, 200: TerminalOut},
    errors=(*AUTH_ERRORS, "validation_error", "not_found", "conflict"),
)
def register_terminal(principal: Principal, merchant_id: str, body: TerminalIn) -> Response:
    out, created = merchants.register_terminal(
        service_context(),
        merchant_id,
        body.terminal_id,
        body.public_key,
        principal.actor,
        principal.merchant_id,
    )
    return json_response(out, 201 if created else 200)


@endpoint(
    bp,
    "/merchants/<merchant_id>/staff",
    "POST",
    auth="admin_or_merchant",
    summary="Create a staff account (a cashier) of the merchant; the answer never holds the password",
    body=StaffIn,
    responses={201: StaffOut},
    errors=(*AUTH_ERRORS, "validation_error", "not_found", "conflict"),
)
def create_staff(principal: Principal, merchant_id: str, body: StaffIn) -> Response:
    out = staff.create_staff(
        service_context(), merchant_id, body.username, body.password, principal.actor, principal.merchant_id
    )
    return json_response(out, 201)


@endpoint(
    bp,
    "/merchants/<merchant_id>/staff",
    "GET",
    auth="admin_or_merchant",
    summary="The merchant's staff accounts",
    responses={200: StaffList},
    errors=(*AUTH_ERRORS, "not_found"),
)
def list_staff(principal: Principal, merchant_id: str) -> Response:
    return json_response({"staff": staff.list_staff(service_context(), merchant_id, principal.merchant_id)})


@endpoint(
    bp,
    "/merchants/<merchant_id>/staff/<staff_id>/disable",
    "POST",
    auth="admin_or_merchant",
    summary="Disable a staff account (its page sessions end too)",
    responses={200: StaffOut},
    errors=(*AUTH_ERRORS, "not_found"),
)
def disable_staff(principal: Principal, merchant_id: str, staff_id: str) -> Response:
    return json_response(
        staff.disable_staff(service_context(), merchant_id, staff_id, principal.actor, principal.merchant_id)
    )
