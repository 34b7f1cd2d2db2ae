"""Runtime: everything a config turns into, swapped whole on reload.

`Runtime.build` turns a validated Config into a route table whose routes carry
compiled filter chains, and upstreams with their connection pools. A reload builds
a complete new Runtime before the old one is touched (as Caddy does), reusing every
pool whose endpoint settings did not change, so warm keep-alive connections
survive a reload. The server then swaps one reference. In-flight requests hold
their own Route and pool objects and finish on the config they started with; pools
no longer referenced are drained (`retired_pools`).
"""

from __future__ import annotations

import asyncio

from gateway.config.model import Config
from gateway.config.model import Route as RouteConfig
from gateway.config.model import Upstream as UpstreamConfig
from gateway.filters import HeaderFilter
from gateway.filters.ratelimit import build_ratelimit_filter
from gateway.forwarded import TrustedProxies
from gateway.pipeline import Filter, compile_chain
from gateway.proxy import Forwarder, Upstream
from gateway.routing import Route, RouteTable
from gateway.store.stores import RateLimitStores
from gateway.upstream import ConnectionPool, EndpointSpec


def endpoint_specs(cfg: UpstreamConfig) -> list[EndpointSpec]:
    return [
        EndpointSpec(
            scheme=ep.scheme,
            host=ep.host,
            port=ep.port,
            max_connections=cfg.pool.max_connections,
            max_idle=cfg.pool.max_idle,
            idle_timeout_s=cfg.pool.idle_timeout,
            tls_verify=cfg.tls.verify,
            tls_ca_file=cfg.tls.ca_file,
            tls_server_name=cfg.tls.server_name,
            tls_cert_file=cfg.tls.cert_file,
            tls_key_file=cfg.tls.key_file,
        )
        for ep in cfg.endpoints
    ]


STORES_DRAIN_S = 5.0


class Runtime:
    __slots__ = ("config", "config_hash", "pools", "stores", "table", "trusted", "upstreams")

    def __init__(
        self,
        config: Config,
        config_hash: str,
        table: RouteTable,
        upstreams: dict[str, Upstream],
        pools: dict[EndpointSpec, ConnectionPool],
        stores: RateLimitStores,
    ) -> None:
        self.config = config
        self.stores = stores  # rate-limit stores (Redis client, memory buckets)
        self.config_hash = config_hash
        self.table = table
        self.upstreams = upstreams
        self.pools = pools
        self.trusted = TrustedProxies(config.trusted_networks)

    @classmethod
    def build(cls, config: Config, config_hash: str, previous: Runtime | None = None) -> Runtime:
        old_pools = previous.pools if previous is not None else {}
        # Same Redis/rate-limit settings: the same stores (client, buckets, counters).
        stores = RateLimitStores.for_config(
            config, previous=previous.stores if previous is not None else None
        )
        pools: dict[EndpointSpec, ConnectionPool] = {}
        upstreams: dict[str, Upstream] = {}
        for name, ucfg in config.upstreams.items():
            members = []
            for spec in endpoint_specs(ucfg):
                pool = pools.get(spec) or old_pools.get(spec) or ConnectionPool(spec)
                pools[spec] = pool
                members.append(pool)
            upstreams[name] = Upstream(name, members)

        server = config.server
        routes = []
        for rcfg in config.routes:
            route = Route(rcfg)
            route.upstream = upstreams[rcfg.upstream]
            forwarder = Forwarder(
                route.upstream,
                connect_timeout_s=rcfg.timeouts.connect,
                read_timeout_s=rcfg.timeouts.read,
                total_timeout_s=rcfg.timeouts.total,
                preserve_host=rcfg.preserve_host,
                retry_idempotent=rcfg.retry_idempotent,
                rewrite=route.rewrite,
                via=server.via,
                request_id_header=server.request_id_header,
                forwarding=config.forwarding,
            )
            route.handler = compile_chain(route_filters(rcfg, stores), forwarder)
            routes.append(route)
        return cls(config, config_hash, RouteTable(routes), upstreams, pools, stores)

    def retired_pools(self, successor: Runtime) -> list[ConnectionPool]:
        """Pools of this runtime that `successor` no longer uses."""
        return [p for spec, p in self.pools.items() if successor.pools.get(spec) is not p]

    async def retire(self, successor: Runtime) -> None:
        """Release what `successor` no longer uses (after a reload swapped it in)."""
        for pool in self.retired_pools(successor):
            await pool.close()
        if successor.stores is not self.stores:
            # Let decisions already waiting on the old Redis client finish first.
            await asyncio.sleep(STORES_DRAIN_S)
            await self.stores.close()

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()
        await self.stores.close()

    def __repr__(self) -> str:
        return (
            f"<Runtime {self.config_hash[:12]} routes={len(self.table.routes)}"
            f" upstreams={len(self.upstreams)} pools={len(self.pools)}>"
        )


def route_filters(rcfg: RouteConfig, stores: RateLimitStores) -> dict[str, Filter]:
    """The filters a route configures, by name.

    Each filter issue adds its builder here (config section -> immutable filter
    object); compile_chain puts them in FILTER_ORDER.
    """
    filters: dict[str, Filter] = {}
    if rcfg.headers is not None and not rcfg.headers.empty:
        filters["headers"] = HeaderFilter(rcfg.headers, route=rcfg.name, upstream=rcfg.upstream)
    ratelimit = build_ratelimit_filter(rcfg, stores)
    if ratelimit is not None:
        filters["ratelimit"] = ratelimit
    return filters
