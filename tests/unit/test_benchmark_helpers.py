"""The pure parts of the HTTP benchmarks' harness (benchmarks/_load.py): what they print is only as
good as these."""

from __future__ import annotations

import re

from benchmarks import _floor_sql as floor_sql
from benchmarks._load import (
    CLOSE_EVERY,
    closes,
    deal,
    parse_stat,
    parse_wrk,
    pgbench_script,
    raw_request,
    result_line,
    to_pgbench,
)


def test_proc_stat_with_spaces_and_parentheses_in_the_name() -> None:
    fields = ["S", "41"] + ["0"] * 9 + ["150", "25"] + ["0"] * 30
    raw = "1234 (postgres: a (b) c) " + " ".join(fields) + "\n"
    assert parse_stat(raw) == ("postgres: a (b) c", 41, 175)


def test_wrk_output_counts_the_asked_status_and_tells_when_requests_ran_out() -> None:
    out = "\n".join(
        [
            "Running 10s test @ http://127.0.0.1:8700/",
            "BENCH status 201 900",
            "BENCH status 200 12",
            "BENCH status 409 3",
            "BENCH thread 0 sent 460 exhausted 12",
            "BENCH thread 1 sent 455 exhausted 0",
            "BENCH duration_us 10000000",
            "BENCH completed 915",
            "BENCH errors 0 0 0 0 0",
            "BENCH latency_p50_us 12500",
            "BENCH latency_mean_us 14000",
        ]
    )
    res = parse_wrk(out, "201")
    assert res.counted == 900 and res.elapsed == 10.0
    assert res.sent_per_thread == [460, 455] and res.exhausted == 12
    assert "ran out" in res.note and not res.errors
    assert res.latency_ms == {"p50": 12.5, "mean": 14.0}
    assert parse_wrk(out, None).counted == 915


def test_wrk_socket_errors_are_reported() -> None:
    res = parse_wrk("BENCH duration_us 1000000\nBENCH errors 0 3 0 0 1\n", None)
    assert res.errors.endswith("0/3/0/0/1")


def test_raw_request_has_its_length_and_closes_when_asked() -> None:
    body = '{"a": "认证"}'.encode()
    req = raw_request("POST", "/x", {"Content-Type": "application/json"}, body, close=True)
    head, _, rest = req.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head and b"Connection: close" in head
    assert rest == body
    assert b"Connection" not in raw_request("GET", "/healthz", {})


def test_requests_are_dealt_to_threads_and_one_in_fifty_closes() -> None:
    lanes = deal([bytes([i]) for i in range(7)], 3)
    assert lanes == [[b"\x00", b"\x03", b"\x06"], [b"\x01", b"\x04"], [b"\x02", b"\x05"]]
    assert [i for i in range(3 * CLOSE_EVERY) if closes(i)] == [
        CLOSE_EVERY - 1,
        2 * CLOSE_EVERY - 1,
        3 * CLOSE_EVERY - 1,
    ]


def test_pgbench_statements_are_typed_one_line_commands() -> None:
    sql = to_pgbench(floor_sql.RESERVE, {"per_person_limit": "int"}, {"holder_hash": "md5('x')"})
    assert "%(" not in sql and "\n" not in sql
    assert "CAST(:program_id AS text)" in sql and "CAST(:per_person_limit AS int)" in sql
    assert "md5('x')" in sql and ":holder_hash" not in sql
    script = pgbench_script([[sql + " \\gset", "SELECT 1;"]], prelude="\\set h random(1, 10)")
    assert script.splitlines() == ["\\set h random(1, 10)", "BEGIN;", sql + " \\gset", "SELECT 1;", "END;"]


def test_every_floor_statement_converts_for_pgbench() -> None:
    for name in ("RESERVE", "ISSUE", "INSERT_LEASE", "CHECKOUT_FACTS", "REDEEM_IDEMPOTENT"):
        converted = to_pgbench(getattr(floor_sql, name), {})
        assert not re.search(r"%\(|(?<![:\w]):(?!\w)", converted), name


def test_result_line_is_the_contract_line() -> None:
    line = result_line("claims", {"route": 250.4, "floor": 500.0, "pg": 1000.0, "healthz": 2000.0})
    assert line == (
        "claims_per_s=250 floor_per_s=500 pg_per_s=1000 healthz_per_s=2000 ratio_floor=0.50 ratio_healthz=0.13"
    )
    zero = result_line("redemptions", {"route": 1.0, "floor": 0.0, "pg": 0.0, "healthz": 0.0})
    assert zero.endswith("ratio_floor=0.00 ratio_healthz=0.00")
