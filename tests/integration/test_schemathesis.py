"""Schemathesis against the served OpenAPI document (issue 8): every operation, fed generated requests
that fit its schema and requests that do not, answers no 5xx and nothing its document does not describe
(status, content type, body schema). Three passes, as an administrator, as a merchant signing each
request with HMAC, and as a logged-in consumer, against the real app on PostgreSQL and Redis with a
live programme, merchant, voucher and redemption, so that many requests do real work.

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized (fixed seed),
no example database."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask, request
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import Admin, consumer_headers
from tests.redemption_support import item, make_world
from voucher_service.api.auth import path_and_query
from voucher_service.services.credentials import create_admin_token, sign_merchant_request

pytestmark = pytest.mark.postgres

EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 8}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SIGN_AS = "X-Test-Sign-As-Merchant"  # read (and removed) by the test's client-side signer below


@dataclasses.dataclass
class Live:
    """Real ids and credentials, so generated requests can reach the services' own checks."""

    app: Flask
    admin_headers: dict[str, str]
    consumer_headers: dict[str, str]
    merchant_id: str
    secret: str
    path_ids: dict[str, list[str]]
    tokens: list[str]


def _install_signer(app: Flask, live: Live) -> None:
    """Play the merchant's client: sign each marked request over exactly the bytes the app receives.

    Schemathesis builds the request (path, query, body) itself, so the signature is made where the
    request arrives, before anything of the app reads it, with the canonical form of CONTRACT §2.
    """

    def sign() -> None:
        env = request.environ
        if env.pop("HTTP_" + SIGN_AS.upper().replace("-", "_"), None) is None:
            return
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        body = request.get_data(cache=True)
        env["HTTP_X_VOUCHER_MERCHANT"] = live.merchant_id
        env["HTTP_X_VOUCHER_TIMESTAMP"] = ts
        env["HTTP_X_VOUCHER_NONCE"] = nonce
        env["HTTP_X_VOUCHER_SIGNATURE"] = sign_merchant_request(
            live.secret, request.method, path_and_query(), ts, nonce, body
        )

    app.before_request_funcs.setdefault(None, []).insert(0, sign)


@pytest.fixture
def live(pg_app: Flask) -> Live:
    ctx = pg_app.extensions["voucher"]
    admin = Admin(pg_app.test_client(), create_admin_token(ctx, "schemathesis"))
    world = make_world(admin, ctx, per_person_limit=50)
    platform = admin.create_merchant("平台", ("online", "offline"), platform=True, enrol_in=world.program_id)
    vouchers = [world.voucher() for _ in range(6)]
    redeemed = world.redeem(vouchers[0][1], [item(world.catalog.rice, 3, 5000)], merchant=platform)
    assert redeemed.status_code == 201, redeemed.get_json()
    outbox = ctx.settings.sms_outbox
    consumer = consumer_headers(pg_app.test_client(), outbox, "13912345678")
    claimed = pg_app.test_client().post(
        f"/api/v1/programs/{world.program_id}/claims", json={"tier": "T20"}, headers=consumer
    )
    assert claimed.status_code == 201, claimed.get_json()
    live = Live(
        app=pg_app,
        admin_headers=admin.headers,
        consumer_headers=consumer,
        merchant_id=platform.id,
        secret=platform.secret,
        path_ids={
            "program_id": [world.program_id],
            "merchant_id": [platform.id, world.merchant.id],
            "voucher_id": [claimed.get_json()["voucher_id"], vouchers[1][0]],
            "redemption_id": [redeemed.get_json()["redemption_id"]],
            "certification_no": [world.catalog.rice_cert, world.catalog.tea_cert],
        },
        tokens=[v[1] for v in vouchers[1:]] + [claimed.get_json()["token"]],
    )
    _install_signer(pg_app, live)
    return live


def _with_live_data(live: Live) -> Callable[[Any, Any], Any]:
    """Put real ids in the path (and a real token in the body) for part of the generated cases."""

    def apply(case: Any, choice: Any) -> Any:
        use_real, pick = choice
        if not use_real:
            return case
        for name in list(case.path_parameters or {}):
            if name in live.path_ids:
                case.path_parameters[name] = live.path_ids[name][pick % len(live.path_ids[name])]
        if isinstance(case.body, dict) and "token" in case.body:
            case.body["token"] = live.tokens[pick % len(live.tokens)]
        if isinstance(case.body, dict) and "merchant_id" in case.body:
            case.body["merchant_id"] = live.merchant_id
        return case

    return apply


PASSES = {
    "admin": "adminBearer",
    "merchant": "merchantSignature",
    "consumer": "consumerBearer",
}


def _schemes(operation: Any) -> set[str]:
    security = operation.definition.raw.get("security", [])
    return {name for requirement in security for name in requirement} or {"public"}


def _run_operation(operation: Any, live: Live, headers: dict[str, str], seen: Counter[int]) -> list[str]:
    failures: list[str] = []
    apply = _with_live_data(live)
    for mode, examples in EXAMPLES.items():
        strategy = st.tuples(
            operation.as_strategy(generation_mode=mode), st.tuples(st.booleans(), st.integers(0, 7))
        )

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(drawn=strategy)
        def run(drawn: Any) -> None:
            case = apply(*drawn)
            seen[case.call_and_validate(headers=headers, checks=CHECKS).status_code] += 1

        try:
            run()
        except Unsatisfiable:  # nothing to negate (no parameters, or only free-form strings)
            continue
        except Exception as exc:  # a failure group with the request that shows it
            failures.append(f"{operation.label} [{mode.value}]: {exc}"[:4000])
    return failures


@pytest.mark.parametrize("who", sorted(PASSES))
def test_no_operation_answers_a_5xx_or_anything_its_document_does_not_describe(live: Live, who: str) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", live.app)
    headers = {"admin": live.admin_headers, "consumer": live.consumer_headers, "merchant": {SIGN_AS: "1"}}[
        who
    ]
    scheme = PASSES[who]
    failures: list[str] = []
    seen: Counter[int] = Counter()
    ran = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    # Logging out ends the pass's session, so it goes last (its later examples are rightly 401).
    operations.sort(key=lambda op: (op.method.upper(), op.path) == ("DELETE", "/api/v1/consumer/sessions"))
    for operation in operations:
        schemes = _schemes(operation)
        if scheme not in schemes and not (who == "admin" and schemes == {"public"}):
            continue
        ran += 1
        failures += _run_operation(operation, live, headers, seen)
    assert not failures, "\n\n".join(failures)
    print(f"{who}: {ran} operations, statuses {dict(sorted(seen.items()))}")
    # The credentials work and real work is done: many requests succeed, and not only the public ones.
    assert ran >= 3 and sum(n for status, n in seen.items() if 200 <= status < 300) >= 2 * ran, seen
