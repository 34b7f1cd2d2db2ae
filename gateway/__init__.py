"""A reverse-proxy API gateway on aiohttp and uvloop.

Where things live:
  cli.py, supervisor.py   commands; one process or a supervisor with N workers
  worker.py               listeners, the current Runtime, reload, graceful stop
  server.py               the aiohttp side: protocol limits, request -> Exchange -> chain
  respond.py              writing replies: one-buffer small bodies, streaming, upgrades
  requestcheck.py         request heads refused before routing (versions, codings, targets)
  exchange.py, body.py    what filters see: Exchange, Reply, streaming bodies
  pipeline.py             Filter / Next, the fixed filter order, chain compilation
  runtime.py              config -> route table + chains + pools, swapped on reload
  proxy.py                the chain's terminal: hop-by-hop rules, forwarding, retries
  overload.py             per-worker event-loop lag monitor -> per-priority admission limits
  errors.py               GatewayError(status) hierarchy, ConfigError(path, message)
  config/                 typed strict model, YAML/TOML loading, checks, JSON Schema
  routing/                route table (host, path, method, headers); version splits
  rollout/                canary rollout plans, gates, controller, state store
  filters/                overload, bans, cors, headers, size, auth, rate limits, screening,
                          cache, compression, dedup
  cache/                  HTTP cache rules (RFC 9111), memory and Redis stores, purge
  store/                  rate-limit buckets, bans, dedup: memory, Redis (Lua, batching,
                          breaker)
  observability/          metrics (one place), feature counters, JSON access log
  tls/                    listener TLS contexts (SNI, mTLS, reload), client-cert facts
  forwarded.py            trusted proxies, client address, RFC 7239 Forwarded
  upstream/               httptools keep-alive pool, breakers, health, balancing, retries
  admin/                  admin API (one Control over all workers), OpenAPI, dashboard
  demo.py                 demo upstreams for the quick start
"""

__version__ = "0.1.0"
