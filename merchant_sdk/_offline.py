"""OfflineTerminal: a till that redeems with no network from what its journal file holds, then syncs."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric import ec

from merchant_sdk._client import ItemLike, VoucherClient, item_json
from merchant_sdk._cose import KeySet, public_jwk, verify_code
from merchant_sdk._errors import (
    MerchantNotEnrolled,
    NoEligibleItems,
    NotFound,
    OfflineLimitExceeded,
    OfflineRefreshRequired,
    PresentationInvalid,
    PresentationRequired,
    ProgramNotActive,
    ThresholdNotMet,
    ValidationError,
    VoucherAlreadyRedeemed,
    VoucherError,
    VoucherRevoked,
)
from merchant_sdk._journal import Journal, JournalRecord
from merchant_sdk._models import OfflineRedemption, RedemptionLine, SyncReport, SyncResult

SYNC_BATCH = 100
MAX_ITEMS = 200
TERMINAL_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_TZ = "Asia/Shanghai"
_CHINA = dt.timezone(dt.timedelta(hours=8), "CST")  # China has no DST; used when tzdata is absent


def _gtin14(text: Any) -> str | None:
    """The 14-digit form of a valid GTIN-8/12/13/14 (GS1 check digit verified), else None."""
    if (
        not isinstance(text, str)
        or not text.isascii()
        or not text.isdigit()
        or len(text) not in (8, 12, 13, 14)
    ):
        return None
    total = sum(int(ch) * (3 if i % 2 == 0 else 1) for i, ch in enumerate(reversed(text[:-1])))
    return text.zfill(14) if (10 - total % 10) % 10 == int(text[-1]) else None


def split_largest_remainder(amount_fen: int, weights: list[int]) -> list[int]:
    """Split `amount_fen` over `weights` in proportion, largest remainder first (ties: earlier line)."""
    total = sum(weights)
    if total <= 0:
        return [0 for _ in weights]
    floors = [amount_fen * w // total for w in weights]
    remainders = [amount_fen * w % total for w in weights]
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[: amount_fen - sum(floors)]:
        floors[i] += 1
    return floors


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rfc3339(unix: float) -> str:
    return dt.datetime.fromtimestamp(int(unix), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zone(name: str | None) -> dt.tzinfo:
    name = name or DEFAULT_TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in (DEFAULT_TZ, "Asia/Chongqing", "Asia/Harbin", "PRC"):
            return _CHINA
        raise VoucherError(
            f"Time zone {name!r} is unknown on this system: install tzdata.", code="unknown_time_zone"
        ) from None


def _certification_reason(product: Mapping[str, Any], today: str, types: Any, counties: Any) -> str | None:
    """None when the product counts on `today` (ISO date) in the programme's scope, else why not."""
    if product.get("status") == "revoked":
        return "certification_revoked"
    if product.get("status") != "active":
        return "certification_suspended"
    if not str(product.get("valid_from")) <= today <= str(product.get("valid_to")):
        return "certification_expired"
    if (types is not None and product.get("certification_type") not in types) or (
        counties is not None and product.get("county_code") not in counties
    ):
        return "out_of_scope"
    return None


class OfflineTerminal:
    """A store till: redeem() works with no network, from the journal file alone; sync() uploads."""

    def __init__(
        self,
        client: VoucherClient,
        terminal_id: str,
        journal_path: str,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not TERMINAL_ID_RE.fullmatch(terminal_id):
            raise ValueError("terminal_id must be 1-64 characters of [A-Za-z0-9_.-]")
        self.client = client
        self.terminal_id = terminal_id
        self._clock = clock or time.time
        self.journal = Journal(journal_path, terminal_id, client.merchant_id)
        stored = self.journal.private_key()
        if stored is None:
            stored = private_key or ec.generate_private_key(ec.SECP256R1())
            self.journal.store_private_key(stored)
            stored = self.journal.private_key() or stored  # another process may have stored its key first
        elif private_key is not None and public_jwk(private_key.public_key()) != public_jwk(
            stored.public_key()
        ):
            raise ValueError(f"{journal_path} already holds a different terminal key")
        self._key = stored
        self.public_jwk = public_jwk(stored.public_key())
        self._keys = KeySet()
        self._programs: dict[str, dict[str, Any]] = {}
        self._load_caches()

    def _load_caches(self) -> None:
        jwks = self.journal.jwks()
        if jwks is not None:
            self._keys.load(jwks)
        self._programs = self.journal.programs()

    def close(self) -> None:
        """Close the journal file."""
        self.journal.close()

    def __enter__(self) -> OfflineTerminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_refresh_at(self) -> float | None:
        """Unix time of the last successful refresh()."""
        value = self.journal.get_meta("last_refresh_at")
        return None if value is None else float(value)

    # ------------------------------------------------------------------ online

    def refresh(self) -> None:
        """Fetch keys, programmes, revocations and the product snapshot; register the terminal key if new."""
        jwks = self.client.refresh_keys()
        # Registered first, so that the programmes request below, naming this terminal, is recorded by
        # the service as its refresh: the server counts the programme's max_offline_hours from there.
        if self.journal.get_meta("registered_kid") != self.public_jwk["kid"]:
            self.client.register_terminal(self.terminal_id, self.public_jwk)
            self.journal.set_meta("registered_kid", self.public_jwk["kid"])
        # One request for both the programmes and the merchant's approved SKU mappings.
        enrolment = dict(
            self.client.request("GET", "/api/v1/merchant/programs", query={"terminal_id": self.terminal_id})
            or {}
        )
        programs = [p for p in enrolment.get("programs") or [] if isinstance(p, dict)]
        mappings = [
            m
            for m in enrolment.get("sku_mappings") or []
            if isinstance(m, dict)
            and isinstance(m.get("sku"), str)
            and isinstance(m.get("certification_no"), str)
        ]
        revocations = {
            p["id"]: self.client.revocations(p["id"], since=self.journal.revocation_version(p["id"]))
            for p in programs
        }
        snapshot = self.client.product_snapshot(since=int(self.journal.get_meta("snapshot_version") or 0))
        self.journal.apply_refresh(jwks, programs, revocations, snapshot, self._clock(), mappings)
        self._load_caches()

    def sync(self) -> SyncReport:
        """Upload the records the service has not answered yet and keep its verdicts; safe to call again."""
        results: list[SyncResult] = []
        pending = self.journal.records(unsynced_only=True)
        for start in range(0, len(pending), SYNC_BATCH):
            batch = pending[start : start + SYNC_BATCH]
            self.journal.mark_sent([r.seq for r in batch], self._clock())
            try:
                answer = self.client.upload_offline_records(
                    self.terminal_id, [r.upload_json() for r in batch]
                )
            except NotFound:
                # The service does not know this terminal (any more): register again at the next refresh().
                self.journal.delete_meta("registered_kid")
                raise
            sent = {r.seq for r in batch}
            got = [SyncResult.from_json(x) for x in answer.get("results") or [] if isinstance(x, dict)]
            now = self._clock()
            for result in got:
                if result.seq in sent:
                    self.journal.store_result(
                        result.seq, result.status, result.code, result.redemption_id, now
                    )
                    results.append(result)
            if {r.seq for r in got} < sent:
                break  # some records got no verdict: they stay unsent, and so does everything after them
        left = len(self.journal.records(unsynced_only=True))
        if left == 0:
            self.journal.set_meta("last_sync_at", repr(self._clock()))
        return SyncReport(results=results, pending=left)

    # ------------------------------------------------------------------ offline

    def records(self) -> list[JournalRecord]:
        """Every journal record with the service's verdict (None until synced)."""
        return self.journal.records()

    def verify_journal(self) -> list[str]:
        """Check the journal's chain and signatures; return the problems found (empty when intact)."""
        return self.journal.verify_chain(self._key.public_key())

    def redeem(self, token: str, items: Iterable[ItemLike], *, order_id: str) -> OfflineRedemption:
        """Redeem a voucher with no network, within the programme's offline limits, and journal it."""
        now = self._clock()
        if not isinstance(order_id, str) or not 1 <= len(order_id) <= 128:
            raise ValidationError("order_id must be 1-128 characters.")
        basket = [self._item(i) for i in items]
        if not 1 <= len(basket) <= MAX_ITEMS:
            raise ValidationError(f"The basket must have 1-{MAX_ITEMS} items.")
        last_refresh = self.last_refresh_at
        if last_refresh is None:
            raise OfflineRefreshRequired(
                "This terminal has never been refreshed: call refresh() while online."
            )
        claims = verify_code(token, self._keys, now)  # a VC1, or a VP1 with both signatures and fresh
        program = self._program_for(claims.program_id, now)
        if claims.holder_key_thumbprint is None and program.get("holder_binding") == "required":
            raise PresentationRequired(
                "This programme's vouchers redeem only as the holder's live code (VP1:)."
            )
        max_hours = int(program.get("offline", {}).get("max_offline_hours", 0))
        if now - last_refresh > max_hours * 3600:
            raise OfflineRefreshRequired(
                f"The terminal's data is older than the programme's {max_hours} h offline limit: "
                "refresh() online."
            )
        if self.journal.is_revoked(claims.program_id, claims.voucher_id):
            raise VoucherRevoked("The voucher was redeemed or voided elsewhere.")
        if claims.presented_at is not None and self.journal.is_holder_key_revoked(
            claims.voucher_id, str(claims.holder_key_thumbprint)
        ):
            raise PresentationInvalid(
                "The voucher was moved to another phone: this device's code no longer works."
            )
        if self.journal.voucher_used(claims.voucher_id):
            raise VoucherAlreadyRedeemed("This terminal already redeemed the voucher.")
        lines = self._lines(basket, program, now)
        eligible_total = sum(ln["line_total_fen"] for ln in lines if ln["eligible"])
        if eligible_total == 0:
            raise NoEligibleItems(
                "No basket line is a certified product within the programme's scope.", body={"lines": lines}
            )
        if eligible_total < claims.min_spend_fen:
            raise ThresholdNotMet(
                f"Eligible total {eligible_total} fen is below the minimum spend {claims.min_spend_fen} fen.",
                body={"lines": lines, "eligible_total_fen": eligible_total},
            )
        discount = claims.face_value_fen
        eligible = [i for i, ln in enumerate(lines) if ln["eligible"]]
        shares = split_largest_remainder(discount, [lines[i]["line_total_fen"] for i in eligible])
        for i, share in zip(eligible, shares, strict=True):
            lines[i]["discount_share_fen"] = share
        payload = {
            "token": token,
            "voucher_id": claims.voucher_id,
            "program_id": claims.program_id,
            "order_id": order_id,
            "items": basket,
            "eligible_total_fen": eligible_total,
            "discount_fen": discount,
            "lines": lines,
            "redeemed_at": _rfc3339(now),
            "terminal_id": self.terminal_id,
        }
        cap = int(program.get("offline", {}).get("max_offline_fen_per_terminal", 0))
        with self.journal.write():  # checks and append under one lock: two tills on one file cannot overspend
            if self.journal.voucher_used(claims.voucher_id):
                raise VoucherAlreadyRedeemed("This terminal already redeemed the voucher.")
            unsynced = self.journal.unsynced_discount_fen(claims.program_id)
            if unsynced + discount > cap:
                raise OfflineLimitExceeded(
                    f"Offline discounts since the last sync would reach {unsynced + discount} fen, over the "
                    f"programme's {cap} fen per terminal: sync() online first.",
                    body={
                        "unsynced_fen": unsynced,
                        "discount_fen": discount,
                        "max_offline_fen_per_terminal": cap,
                    },
                )
            record = self.journal.append(payload, self._key, now)
        return OfflineRedemption(
            seq=record.seq,
            record_hash=record.record_hash,
            terminal_id=self.terminal_id,
            voucher_id=claims.voucher_id,
            program_id=claims.program_id,
            order_id=order_id,
            order_total_fen=sum(ln["line_total_fen"] for ln in lines),
            eligible_total_fen=eligible_total,
            discount_fen=discount,
            redeemed_at=payload["redeemed_at"],
            lines=[RedemptionLine.from_json(ln) for ln in lines],
        )

    @staticmethod
    def _item(item: ItemLike) -> dict[str, Any]:
        try:
            out = item_json(item)
        except (TypeError, KeyError) as exc:
            raise ValidationError(f"Bad basket line: {exc}") from None
        if out["quantity"] < 1 or out["unit_price_fen"] < 0:
            raise ValidationError("quantity must be >= 1 and unit_price_fen >= 0.")
        if out.get("gtin") is None and out.get("sku") is None:
            raise ValidationError("A basket line needs a gtin or a sku.")
        # The same bounds as the service applies when the record is synced.
        for name, limit in (("gtin", 14), ("sku", 64), ("name", 200)):
            value = out.get(name)
            if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= limit):
                raise ValidationError(f"A basket line's {name} must be 1-{limit} characters.")
        return out

    def _program_for(self, program_id: str, now: float) -> dict[str, Any]:
        program = self._programs.get(program_id)
        if program is None:
            raise MerchantNotEnrolled(
                "This merchant is not enrolled in the voucher's programme (as of the last refresh)."
            )
        if "offline" not in (program.get("channels") or []):
            raise MerchantNotEnrolled("The voucher's programme does not allow offline redemption.")
        if program.get("status") != "active" or not (
            _parse_time(program["starts_at"]) <= now <= _parse_time(program["ends_at"])
        ):
            raise ProgramNotActive("The voucher's programme is not active now.")
        return program

    def _resolve(self, item: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The cached product a line stands for, or None and why, resolved as the service resolves it."""
        gtin, sku = item.get("gtin"), item.get("sku")
        gtin14 = _gtin14(gtin)
        if gtin is not None and gtin14 is None:
            return None, "invalid_gtin"
        product = self.journal.product_for_gtin(gtin14) if gtin14 else None
        # Only a line whose GTIN is absent, or valid but unknown, falls back to the approved SKU mapping.
        if product is None and sku is not None:
            product = self.journal.product_for_sku(sku)
        if product is None:
            return None, "not_certified" if gtin is not None else "sku_not_mapped"
        return product, None

    def _lines(
        self, basket: list[dict[str, Any]], program: Mapping[str, Any], now: float
    ) -> list[dict[str, Any]]:
        """Per-line verdicts from the cached product snapshot and the programme's eligibility."""
        today = dt.datetime.fromtimestamp(now, _zone(program.get("timezone"))).date().isoformat()
        scope = program.get("eligibility") or {}
        types = scope.get("certification_types") or []
        counties = scope.get("county_codes")
        lines = []
        for index, item in enumerate(basket):
            # The same verdicts, in the same order, as the service's eligibility rules.
            product, reason = self._resolve(item)
            if product is not None:
                reason = _certification_reason(product, today, types, counties)
            eligible = reason is None and product is not None
            lines.append(
                {
                    "index": index,
                    "gtin": item.get("gtin"),
                    "eligible": eligible,
                    "reason": reason,
                    "certification_no": product.get("certification_no") if eligible and product else None,
                    "county_code": product.get("county_code") if eligible and product else None,
                    "line_total_fen": item["quantity"] * item["unit_price_fen"],
                    "discount_share_fen": 0,
                }
            )
        return lines
