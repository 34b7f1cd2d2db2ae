"""Runtime: everything a config turns into, swapped whole on reload.

`Runtime.build` turns a validated Config into a route table whose routes carry
compiled filter chains, and upstreams with their connection pools. A reload builds
a complete new Runtime before the old one is touched (as Caddy does), reusing every
pool whose endpoint settings did not change, so warm keep-alive connections
survive a reload. The server then swaps one reference. In-flight requests hold
their own Route and pool objects and finish on the config they started with; pools
no longer referenced are drained (`retired_pools`).

Resilience state survives a reload the same way: breakers and health states per
(upstream, endpoint) while their settings are equal (`build_upstream`), retry budgets
per (route, retry settings). Health checkers run as tasks of the worker:
`start_health()` on the live Runtime, `stop_health(successor)` on the one replaced
(checkers the successor reuses keep running). `clock` (default time.monotonic) is
the time source of breakers and budgets; tests inject a fake one.

Services with versions: one VersionSplit per service (shared by its routes), whose
per-version stats survive reloads (`version_stats`, by service, version, upstream);
upstreams whose endpoints name regions get a RegionalBalancer (locality.py). The
rollouts (`Rollouts.build`) keep their state across a reload while their plan is
unchanged; their clock is the injected one, else wall time (shared via Redis).

Bans (`bans` section): one BanStore per config, reused while `bans` and `redis` are
unchanged and otherwise handing its BanState (bans, block windows) to the next, as
the rate-limit stores do; one BanGuard (compiled lists) shared by the routes' filters.

Overload and dedup: one OverloadMonitor per worker, handed from runtime to runtime
(reconfigured in place: the routes' filters hold its limits list); its lag task is
the worker's. DedupStores are reused while the redis settings hold (their memory
store always), the replaced one closed in `retire` after the drain.

Cache (`cache_store`): one store per worker (gateway/cache: `store_for_config`), kept
across reloads while its backend and settings hold (a memory store is resized in
place); the one replaced is closed in `retire`. A memory store's clock is the
runtime's, a Redis store's wall time (shared by instances); tests may replace either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.cache import CacheStore, MemoryStore, store_for_config
from gateway.config.model import Config
from gateway.config.model import Route as RouteConfig
from gateway.config.model import Upstream as UpstreamConfig
from gateway.config.overload_model import Overload
from gateway.filters import HeaderFilter, ScreeningFilter, SizeFilter
from gateway.filters.auth import build_auth_filter
from gateway.filters.bans import BanFilter, BanGuard
from gateway.filters.cache import CacheFilter, fast_path_filter
from gateway.filters.compression import CompressionFilter
from gateway.filters.cors import CorsFilter
from gateway.filters.dedup import DedupFilter
from gateway.filters.overload import OverloadFilter
from gateway.filters.ratelimit import build_ratelimit_filter
from gateway.forwarded import TrustedProxies
from gateway.overload import OverloadMonitor
from gateway.pipeline import Filter, compile_chain
from gateway.proxy import Forwarder, Upstream
from gateway.rollout.controller import Rollouts
from gateway.rollout.stats import VersionStats
from gateway.routing import Route, RouteTable
from gateway.routing.split import Version, VersionSplit
from gateway.store.bans import BanStore
from gateway.store.dedup import DedupStores, MemoryDedup
from gateway.store.stores import RateLimitStores
from gateway.upstream import ConnectionPool, EndpointSpec, RetryBudget, RetryPolicy
from gateway.upstream.health import HealthChecker
from gateway.upstream.locality import regional_balancer
from gateway.upstream.service import build_upstream


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
    __slots__ = (
        "bans",
        "budgets",
        "cache",
        "clock",
        "config",
        "config_hash",
        "dedup",
        "filters",
        "overload",
        "pools",
        "rollouts",
        "splits",
        "stores",
        "table",
        "trusted",
        "upstreams",
        "version_stats",
    )

    def __init__(
        self,
        config: Config,
        config_hash: str,
        table: RouteTable,
        upstreams: dict[str, Upstream],
        pools: dict[EndpointSpec, ConnectionPool],
        stores: RateLimitStores,
        budgets: dict[tuple[str, RetryPolicy], RetryBudget] | None = None,
        clock: Callable[[], float] = time.monotonic,
        splits: dict[str, VersionSplit] | None = None,
        rollouts: Rollouts | None = None,
        bans: BanStore | None = None,
        cache: CacheStore | None = None,
    ) -> None:
        self.bans = bans  # the worker's ban state (None: no bans section)
        # route name -> its filters by name (their counters are read by the metrics flush)
        self.filters: dict[str, dict[str, Filter]] = {}
        # The worker's overload monitor (kept across reloads, its task run by the worker)
        # and the dedup stores (set by build; gateway/overload.py, gateway/store/dedup.py).
        self.overload = OverloadMonitor(config.overload)
        self.dedup: DedupStores | None = None
        # The worker's cache entries: one store, kept across reloads (resized in place).
        self.cache = cache if cache is not None else MemoryStore(config.cache_store.max_bytes)
        self.splits = splits if splits is not None else {}
        self.version_stats = {
            (sp.name, v.name, v.upstream.name): v.stats
            for sp in self.splits.values()
            for v in sp.versions
        }
        self.rollouts = rollouts if rollouts is not None else Rollouts.empty(clock)
        self.budgets = budgets if budgets is not None else {}
        self.clock = clock
        self.config = config
        self.stores = stores  # rate-limit stores (Redis client, memory buckets)
        self.config_hash = config_hash
        self.table = table
        self.upstreams = upstreams
        self.pools = pools
        self.trusted = TrustedProxies(config.trusted_networks)

    @classmethod
    def build(
        cls,
        config: Config,
        config_hash: str,
        previous: Runtime | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Runtime:
        rollout_clock = clock  # injected (tests), else wall time: see Rollouts.build
        if clock is None:
            clock = previous.clock if previous is not None else time.monotonic
        now = clock()
        old_upstreams = previous.upstreams if previous is not None else {}
        old_budgets = previous.budgets if previous is not None else {}
        budgets: dict[tuple[str, RetryPolicy], RetryBudget] = {}
        old_pools = previous.pools if previous is not None else {}
        # Same Redis/rate-limit settings: the same stores (client, buckets, counters).
        stores = RateLimitStores.for_config(
            config, previous=previous.stores if previous is not None else None
        )
        bans = BanStore.for_config(config, previous.bans if previous else None, clock)
        guard = BanGuard(config.bans, bans) if config.bans and bans else None
        if bans is not None:
            bans.start()  # the Redis sync, when a loop runs (idempotent)
        cache = store_for_config(
            config.cache_store, previous.cache if previous is not None else None, clock
        )
        pools: dict[EndpointSpec, ConnectionPool] = {}
        upstreams: dict[str, Upstream] = {}
        for name, ucfg in config.upstreams.items():
            members = []
            for spec in endpoint_specs(ucfg):
                pool = pools.get(spec) or old_pools.get(spec) or ConnectionPool(spec)
                pools[spec] = pool
                members.append(pool)
            up = upstreams[name] = build_upstream(
                name, ucfg, members, old_upstreams.get(name), now, clock
            )
            regional = regional_balancer(ucfg, up.members, config.region)
            if regional is not None:
                up.balancer = regional
        splits = build_splits(config, upstreams, previous.version_stats if previous else {})
        rollouts = Rollouts.build(
            config, splits, previous.rollouts if previous is not None else None, rollout_clock
        )

        server = config.server
        routes = []
        by_route: dict[str, dict[str, Filter]] = {}
        monitor = previous.overload if previous is not None else OverloadMonitor()
        overload = (config.overload, monitor) if config.overload is not None else None
        dedup = DedupStores.for_config(config, previous.dedup if previous else None, clock)
        for rcfg in config.routes:
            route = Route(rcfg)
            split = splits.get(rcfg.upstream)
            route.upstream = split.baseline.upstream if split else upstreams[rcfg.upstream]
            retry = retry_policy(rcfg)
            bkey = (rcfg.name, retry)
            budget = budgets[bkey] = old_budgets.get(bkey) or RetryBudget(retry)
            forwarder = Forwarder(
                route.upstream,
                connect_timeout_s=rcfg.timeouts.connect,
                read_timeout_s=rcfg.timeouts.read,
                total_timeout_s=rcfg.timeouts.total,
                max_response_bytes=rcfg.max_response_bytes,
                preserve_host=rcfg.preserve_host,
                retry_idempotent=rcfg.retry_idempotent,
                rewrite=route.rewrite,
                via=server.via,
                request_id_header=server.request_id_header,
                forwarding=config.forwarding,
                retry=retry,
                budget=budget,
                clock=clock,
                split=split,
            )
            filters = route_filters(rcfg, stores, guard, cache, overload=overload, dedup=dedup)
            by_route[rcfg.name] = filters
            route.handler = compile_chain(filters, forwarder)
            route.cache_fast = fast_path_filter(filters)  # server.py answers its hits
            routes.append(route)
        runtime = cls(
            config,
            config_hash,
            RouteTable(routes),
            upstreams,
            pools,
            stores,
            budgets,
            clock,
            splits,
            rollouts,
            bans,
            cache,
        )
        runtime.filters = by_route
        monitor.configure(config.overload)  # the limits change in place: nothing can fail now
        runtime.overload = monitor
        runtime.dedup = dedup
        return runtime

    @property
    def health_checkers(self) -> list[HealthChecker]:
        return [u.checker for u in self.upstreams.values() if u.checker is not None]

    def start_health(self) -> None:
        """Run this runtime's health checks in the current loop (idempotent)."""
        for checker in self.health_checkers:
            checker.start()

    async def stop_health(self, successor: Runtime | None = None) -> None:
        """Stop the checkers that `successor` does not reuse (all without one)."""
        keep = {id(c) for c in successor.health_checkers} if successor is not None else set()
        for checker in self.health_checkers:
            if id(checker) not in keep:
                await checker.stop()

    def retired_pools(self, successor: Runtime) -> list[ConnectionPool]:
        """Pools of this runtime that `successor` no longer uses."""
        return [p for spec, p in self.pools.items() if successor.pools.get(spec) is not p]

    async def retire(self, successor: Runtime) -> None:
        """Release what `successor` no longer uses (after a reload swapped it in)."""
        await self.stop_health(successor)
        await self.rollouts.close(successor.rollouts)
        for pool in self.retired_pools(successor):
            await pool.close()
        if self.bans is not None and successor.bans is not self.bans:
            await self.bans.retire(successor.bans)
        if successor.stores is not self.stores:
            # Let decisions already waiting on the old Redis client finish first.
            await asyncio.sleep(STORES_DRAIN_S)
            await self.stores.close()
        if self.dedup is not None and successor.dedup is not self.dedup:
            if successor.stores is self.stores:  # else drained just above
                await asyncio.sleep(STORES_DRAIN_S)
            await self.dedup.close()
        if successor.cache is not self.cache:
            await self.cache.close()

    async def close(self) -> None:
        await self.stop_health()
        await self.rollouts.close()
        for pool in self.pools.values():
            await pool.close()
        await self.stores.close()
        if self.dedup is not None:
            await self.dedup.close()
        if self.bans is not None:
            await self.bans.retire(None)
        await self.cache.close()

    def __repr__(self) -> str:
        return (
            f"<Runtime {self.config_hash[:12]} routes={len(self.table.routes)}"
            f" upstreams={len(self.upstreams)} pools={len(self.pools)}>"
        )


def build_splits(
    config: Config,
    upstreams: dict[str, Upstream],
    old_stats: dict[tuple[str, str, str], VersionStats],
) -> dict[str, VersionSplit]:
    """One VersionSplit per service, at its configured weights (a rollout sets its own)."""
    splits: dict[str, VersionSplit] = {}
    for name, svc in config.services.items():
        versions = []
        for vname, v in svc.versions.items():
            stats = old_stats.get((name, vname, v.upstream)) or VersionStats(f"{name}/{vname}")
            versions.append(Version(vname, upstreams[v.upstream], stats))
        sticky = svc.sticky
        set_cookie = sticky.key == "cookie" and sticky.set_cookie is not False
        ov = svc.override
        split = VersionSplit(
            name,
            versions,
            baseline=svc.baseline,
            target=svc.rollout.version if svc.rollout is not None else None,
            sticky=(sticky.key, sticky.key_name),
            set_cookie_max_age_s=sticky.max_age if set_cookie else None,
            override_header=ov.header if ov is not None else None,
            override_cookie=ov.cookie if ov is not None else None,
            version_header=svc.version_header,
        )
        if svc.rollout is None:
            split.set_weights({n: v.weight or 0.0 for n, v in svc.versions.items()})
        splits[name] = split
    return splits


def retry_policy(rcfg: RouteConfig) -> RetryPolicy:
    r = rcfg.retries
    return RetryPolicy(
        attempts=r.attempts,
        per_try_timeout_s=r.per_try_timeout,
        on_statuses=frozenset(r.on_statuses),
        budget_percent=r.budget_percent,
        min_retries_per_s=r.min_retries_per_s,
    )


def route_filters(
    rcfg: RouteConfig,
    stores: RateLimitStores,
    bans: BanGuard | None = None,
    cache: CacheStore | None = None,
    *,
    overload: tuple[Overload, OverloadMonitor] | None = None,
    dedup: DedupStores | None = None,
) -> dict[str, Filter]:
    """The filters a route configures, by name.

    Each filter issue adds its builder here (config section -> immutable filter
    object); compile_chain puts them in FILTER_ORDER.
    """
    filters: dict[str, Filter] = {}
    if bans is not None and rcfg.bans:
        filters["bans"] = BanFilter(bans, route=rcfg.name)
    if rcfg.headers is not None and not rcfg.headers.empty:
        filters["headers"] = HeaderFilter(rcfg.headers, route=rcfg.name, upstream=rcfg.upstream)
    if rcfg.limits is not None:
        filters["size"] = SizeFilter(rcfg.limits, route=rcfg.name)
    if rcfg.screening is not None:
        filters["screening"] = ScreeningFilter(rcfg.screening, route=rcfg.name)
    if rcfg.cache is not None:  # without the worker's store (tests), a store of its own
        store = cache if cache is not None else MemoryStore(64 << 20)
        filters["cache"] = CacheFilter(rcfg.cache, store, route=rcfg.name)
    if rcfg.compression is not None:
        filters["compression"] = CompressionFilter(rcfg.compression, route=rcfg.name)
    ratelimit = build_ratelimit_filter(rcfg, stores)
    if ratelimit is not None:
        filters["ratelimit"] = ratelimit
    if rcfg.cors is not None:
        filters["cors"] = CorsFilter(rcfg.cors, route=rcfg.name)
    if overload is not None:
        settings, monitor = overload
        filters["overload"] = OverloadFilter(
            settings, monitor, route=rcfg.name, priority=rcfg.priority
        )
    if rcfg.dedup is not None:
        stores_ = dedup if dedup is not None else DedupStores(None, MemoryDedup())
        filters["dedup"] = DedupFilter(
            rcfg.dedup, stores_, route=rcfg.name, total_timeout_s=rcfg.timeouts.total
        )
    auth = build_auth_filter(rcfg)  # reads the route's key, secret and JWKS files
    if auth is not None:
        filters["auth"] = auth
    return filters
