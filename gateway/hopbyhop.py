"""Hop-by-hop header names (RFC 9110 7.6.1), shared by the proxy and the config checks.

Plus the de-facto ones (Keep-Alive, Proxy-Connection) and the framing fields the proxy
rebuilds on each side (Content-Length, Transfer-Encoding, Expect): never forwarded as
received, and never editable by header rules.
"""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)
