"""VoucherClient.verify() per second against raw ES256 verifications of the same messages, same run.

verify() does everything a till does with a scanned QR text: Base45, COSE_Sign1 and CBOR decoding,
the kid lookup, the ES256 check and the validity window. The baseline is cryptography's verify() of
the same Sig_structure bytes with the same key and DER signature, prepared in advance. Tokens are
made with the server's signing code; verify() caches no results, so every call does the full work.

Last line: verify_per_s=N raw_per_s=M ratio=R (the aim is ratio >= 0.8).

Holder binding (CONTRACT §10): the line before it, vp1_per_s=N raw_per_s=M vp1_ratio=R, is verify() of VP1
live codes (two ECDSA verifications: the service's on the VC1, the phone's on the presentation, plus the
freshness check) against the same raw ES256 baseline in the same run; each presentation is of a distinct
voucher with its own device key, more of them than the SDK caches keys for (the aim is vp1_ratio >= 0.4).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

from merchant_sdk import VoucherClient  # noqa: E402
from voucher_service.adapters import signing  # noqa: E402
from voucher_service.domain.tokens import VoucherClaims  # noqa: E402


def make_tokens(count: int) -> tuple[list[str], dict[str, object], ec.EllipticCurvePublicKey]:
    """`count` distinct VC1 tokens signed by one fresh key, with its JWKS."""
    key = signing.generate_private_key()
    kid = signing.kid_bytes_for(key.public_key())
    now = int(time.time())
    tokens = []
    for i in range(count):
        claims = VoucherClaims(
            str(uuid.uuid4()),
            "5d0f3c8e-2b7a-4c1e-9f6d-1a2b3c4d5e6f",
            "T50" if i % 2 else "T20",
            5000,
            15000,
            now,
            now,
            now + 30 * 86_400,
        )
        tokens.append(signing.encode_token(key, kid, claims.to_cbor_map()))
    return tokens, {"keys": [signing.public_jwk(key.public_key())]}, key.public_key()


def make_presentations(count: int) -> tuple[list[str], dict[str, object]]:
    """`count` VP1 codes, each of a distinct holder-bound VC1 with its own device key, made now."""
    from voucher_service.domain.presentations import HolderKey

    key = signing.generate_private_key()
    kid = signing.kid_bytes_for(key.public_key())
    now = int(time.time())
    codes = []
    for _ in range(count):
        device = ec.generate_private_key(ec.SECP256R1())
        n = device.public_key().public_numbers()
        claims = VoucherClaims(
            str(uuid.uuid4()),
            "5d0f3c8e-2b7a-4c1e-9f6d-1a2b3c4d5e6f",
            "T50",
            5000,
            15000,
            now,
            now,
            now + 30 * 86_400,
            holder_key=HolderKey(n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big")),
        )
        token = signing.encode_token(key, kid, claims.to_cbor_map())
        codes.append(signing.encode_presentation(device, token, now))
    return codes, {"keys": [signing.public_jwk(key.public_key())]}


def interleaved_passes(
    verify: Callable[[str], object],
    tokens: Sequence[str],
    raw: Callable[[tuple[bytes, bytes]], None],
    raw_inputs: Sequence[tuple[bytes, bytes]],
    batch: int,
    seconds: float,
) -> tuple[list[float], list[float]]:
    """Seconds per call of each side over batches of `batch` tokens, alternating, for about `seconds`.

    Short batches (a millisecond or two), alternated, so that a change of load on the machine hits both
    sides alike, and so that many batches run without being preempted at all.
    """
    verify_passes: list[float] = []
    raw_passes: list[float] = []
    starts = range(0, len(tokens) - batch + 1, batch)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for i in starts:
            some_tokens, some_inputs = tokens[i : i + batch], raw_inputs[i : i + batch]
            started = time.perf_counter()
            for token in some_tokens:
                verify(token)
            middle = time.perf_counter()
            for item in some_inputs:
                raw(item)
            verify_passes.append((middle - started) / batch)
            raw_passes.append((time.perf_counter() - middle) / batch)
    return verify_passes, raw_passes


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batch", type=int, default=20, help="calls per timed batch")
    parser.add_argument("--presentations", type=int, default=2000, help="VP1 codes of distinct vouchers")
    args = parser.parse_args()

    tokens, jwks, public_key = make_tokens(args.tokens)
    client = VoucherClient("http://127.0.0.1:9", "bench-merchant", "unused")  # never contacted
    client.load_keys(jwks)
    raw_inputs: list[tuple[bytes, bytes]] = []
    for token in tokens:
        parsed = signing.parse_token(token)
        sig = parsed.signature
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        message = signing._sig_structure(parsed.protected, parsed.payload_bytes)
        raw_inputs.append((der, message))
    algorithm = ec.ECDSA(hashes.SHA256())

    def raw(item: tuple[bytes, bytes]) -> None:
        public_key.verify(item[0], item[1], algorithm)

    assert all(client.verify(t).face_value_fen == 5000 for t in tokens)  # every token really verifies
    interleaved_passes(client.verify, tokens, raw, raw_inputs, args.batch, 0.3)  # warm up
    verify_passes, raw_passes = interleaved_passes(
        client.verify, tokens, raw, raw_inputs, args.batch, args.seconds
    )
    # VP1 live codes, against the same raw baseline (raw_inputs has at least as many items as batches use).
    codes, vp_jwks = make_presentations(args.presentations)
    vp_client = VoucherClient("http://127.0.0.1:9", "bench-merchant", "unused")  # never contacted
    vp_client.load_keys(vp_jwks)
    assert all(vp_client.verify(c).presented_at is not None for c in codes)  # every code really verifies
    raw_cycle = [raw_inputs[i % len(raw_inputs)] for i in range(len(codes))]
    # Half the batch: a VP1 costs about two verifications, so its batches last as long as the VC1 ones.
    vp_batch = max(1, args.batch // 2)
    interleaved_passes(vp_client.verify, codes, raw, raw_cycle, vp_batch, 0.3)  # warm up
    vp_passes, vp_raw_passes = interleaved_passes(
        vp_client.verify, codes, raw, raw_cycle, vp_batch, args.seconds
    )
    vp_client.close()
    vp_per_s, vp_raw_per_s = 1 / min(vp_passes), 1 / min(vp_raw_passes)
    client.close()
    # The fastest batch of each side is its cost with the least interference from other processes (as
    # timeit recommends); the means are printed too.
    verify_per_s, raw_per_s = 1 / min(verify_passes), 1 / min(raw_passes)
    mean_ratio = statistics.fmean(raw_passes) / statistics.fmean(verify_passes)
    print(
        f"tokens={len(tokens)} token_chars={len(tokens[0])} batches={len(verify_passes)}x{args.batch} "
        f"seconds={args.seconds}"
    )
    print(
        f"fastest batch: verify_us={1e6 / verify_per_s:.1f} raw_us={1e6 / raw_per_s:.1f} "
        f"overhead_us={1e6 / verify_per_s - 1e6 / raw_per_s:.1f}"
    )
    print(
        f"mean batch: verify_us={1e6 * statistics.fmean(verify_passes):.1f} "
        f"raw_us={1e6 * statistics.fmean(raw_passes):.1f} ratio={mean_ratio:.2f}"
    )
    print(
        f"presentations={len(codes)} code_chars={len(codes[0])} vp1_us={1e6 / vp_per_s:.1f} "
        f"mean vp1_ratio={statistics.fmean(vp_raw_passes) / statistics.fmean(vp_passes):.2f}"
    )
    print(f"vp1_per_s={vp_per_s:.0f} raw_per_s={vp_raw_per_s:.0f} vp1_ratio={vp_per_s / vp_raw_per_s:.2f}")
    print(f"verify_per_s={verify_per_s:.0f} raw_per_s={raw_per_s:.0f} ratio={verify_per_s / raw_per_s:.2f}")


if __name__ == "__main__":
    main()
