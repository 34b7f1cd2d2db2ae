"""The admin listener (bound to 127.0.0.1 by default, apart from the proxy port).

app.py       the HTTP side: JSON API under /api, /metrics, probes, dashboard, token
control.py   Control: operations asked of every worker and merged; LocalControl
fanout.py    FanoutControl (supervisor -> workers over Unix sockets), the worker side
ops.py       WorkerOps: what one worker answers about its Runtime; ControlError
stats.py     per-route counters for the dashboard, read from the merged scrape
openapi.py   the API's OpenAPI 3 description (/api/openapi.json)
static/      the dashboard: one HTML page, plain JS and CSS, no build step
"""
