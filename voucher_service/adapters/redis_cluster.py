"""The Redis Cluster client for `redis+cluster://` URLs (the contract's scheme for a cluster)."""

from __future__ import annotations

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """Tell whether `url` names a Redis Cluster (`redis+cluster://` or, with TLS, `rediss+cluster://`)."""
    return url.split("://", 1)[0] in SCHEMES


def cluster_client(url: str) -> object:
    """A RedisCluster for `redis+cluster://[user:password@]host:port[,host:port...]`: every listed node is
    a startup node, and the client learns the rest of the cluster (and later failovers) from them."""
    from redis.cluster import ClusterNode, RedisCluster

    scheme, rest = url.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis Cluster URL scheme: {scheme!r}")
    userinfo, _, hosts = rest.rpartition("@")
    hosts, sep, tail = hosts.partition("/")
    nodes = [h.strip() for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise ValueError("a Redis Cluster URL names at least one host:port")
    others = []
    for node in nodes[1:]:
        host, _, port = node.rpartition(":")
        others.append(ClusterNode(host or node, int(port) if port.isdecimal() else 6379))
    first = f"{SCHEMES[scheme]}://{userinfo + '@' if userinfo else ''}{nodes[0]}{sep}{tail}"
    return RedisCluster.from_url(
        first,
        startup_nodes=others or None,
        # As for a single Redis: an unreachable node is an outage (503) after seconds, not a hang.
        socket_timeout=5,
        socket_connect_timeout=5,
    )
