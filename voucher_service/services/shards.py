"""Hash tags that put the FastStore keys one request touches into one Redis Cluster slot.

A key's `{tag}` picks its slot, so keys with the same tag can be read and written by one Lua script. There
are SHARDS tags; a merchant's keys (its request nonces, their epoch marker, its claim counter) share the
merchant's tag, a holder's keys (its claim counter) the holder's. What every request may need to read
(a tier's sold-out gate, the nonce epoch markers) is kept under every tag.
"""

from __future__ import annotations

import zlib

SHARDS = 64


def tag(shard: int) -> str:
    """The hash tag of a shard."""
    return "{vs:" + str(shard) + "}"


def all_tags() -> list[str]:
    """Every shard's hash tag."""
    return [tag(i) for i in range(SHARDS)]


def shard_of(name: str) -> int:
    return zlib.crc32(name.encode()) % SHARDS


def merchant_tag(merchant_id: str) -> str:
    """The hash tag of a merchant's keys."""
    return tag(shard_of("m:" + merchant_id))


def holder_tag(holder_hash: str) -> str:
    """The hash tag of a holder's keys."""
    return tag(shard_of("h:" + holder_hash))
