"""Checks on a parsed request head that aiohttp's parser (llhttp, strict for requests)
leaves to the application; each closes a way to make the gateway and the upstream
read one request differently.

- Version: only HTTP/1.0 and 1.1 are spoken here. llhttp accepts `HTTP/2.0` and
  HTTP/0.9 request lines and aiohttp would echo the version back; 505 (RFC 9110
  15.6.6).
- Transfer-Encoding: llhttp refuses a request whose final coding is not chunked, but
  passes `gzip, chunked` and decodes only the chunked layer; forwarding that body
  without its other coding changes its meaning, so any coding but a lone `chunked`
  gets 501 (RFC 9112 6.1). In an HTTP/1.0 request the framing is faulty by
  definition (RFC 9112 6.1): 400.
- Request target (RFC 9112 3.2): origin-form (`/path?query`) is routed;
  absolute-form (`http://host/path`) only when its authority is the Host header
  (RFC 9112 3.2.2 says the target's authority wins: refusing a mismatch keeps the
  route match and the upstream's idea of the host the same), and is forwarded in
  origin-form; asterisk-form only for OPTIONS (RFC 9112 3.2.4); authority-form
  and anything else: 400; CONNECT, whatever its target: 501. A fragment never belongs in a target
  (RFC 9112 3.2). In the path (not the query): dot segments, raw or percent-encoded
  (`/a/../b`, `/a/%2e%2e/b`), a backslash, and percent-encoded `/` or `\\` are
  refused, because routes match the raw path while upstreams often normalise or
  decode it: `/public/../admin` would match a `/public` route and reach `/admin`.
  Encoded slashes can be allowed (`server.allow_encoded_slashes`) for APIs that put
  them in identifiers; dot segments cannot.

Cost on the hot path: for an origin-form target, four substring scans of the path;
the detailed checks run only when one of them hits.
"""

from __future__ import annotations

from collections.abc import Iterable


class Refusal(Exception):
    """A request head the gateway will not forward: answer `status`, then close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"<Refusal {self.status} {self.code}: {self.message}>"


_SCHEMES = ("http://", "https://")
_DOT_SEGMENTS = frozenset({".", ".."})


def check_version(major: int, minor: int) -> None:
    if major != 1 or minor > 1:
        raise Refusal(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served")


def check_transfer_encoding(values: Iterable[str], version_minor: int) -> None:
    """`values`: every Transfer-Encoding field of the request (none: nothing to check)."""
    codings = [c.strip().lower() for v in values for c in v.split(",")]
    if not codings:
        return
    if version_minor == 0:
        raise Refusal(400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request")
    if codings != ["chunked"]:
        raise Refusal(501, "not_implemented", "only the chunked transfer coding is supported")


def origin_form(target: str, method: str, host: str, allow_encoded_slashes: bool) -> str:
    """The target to route and forward, in origin-form ('*' for OPTIONS *), or Refusal.

    `host` is the Host header as received ('' when absent)."""
    if method == "CONNECT":  # no tunnels here, whatever the target's form (RFC 9110 9.3.6)
        raise Refusal(501, "not_implemented", "CONNECT is not supported")
    if target[:1] == "/":
        if "#" in target:
            raise Refusal(400, "bad_request", "a fragment in the request target")
        _check_path(target, allow_encoded_slashes)
        return target
    if target == "*":
        if method == "OPTIONS":
            return target
        raise Refusal(400, "bad_request", "asterisk-form target is only for OPTIONS")
    lowered = target[:8].lower()
    scheme = next((s for s in _SCHEMES if lowered.startswith(s)), None)
    if scheme is None:
        raise Refusal(400, "bad_request", "request target is not in origin or absolute form")
    rest = target[len(scheme) :]
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority, path = rest[:end], rest[end:]
    if not authority or "@" in authority:
        raise Refusal(400, "bad_request", "absolute-form target without a plain authority")
    if authority.lower() != host.lower():
        raise Refusal(400, "bad_request", "absolute-form target names another host than Host")
    if path[:1] != "/":
        path = "/" + path
    return origin_form(path, method, host, allow_encoded_slashes)


def _check_path(target: str, allow_encoded_slashes: bool) -> None:
    path = target.partition("?")[0]
    if "\\" in path:
        raise Refusal(400, "bad_request", "a backslash in the request path")
    if "%" in path:
        lowered = path.lower()
        if not allow_encoded_slashes and ("%2f" in lowered or "%5c" in lowered):
            raise Refusal(400, "bad_request", "an encoded slash in the request path")
        if "%2e" in lowered:
            path = lowered.replace("%2e", ".")
        if allow_encoded_slashes:  # an upstream that decodes them sees these segments
            path = path.lower().replace("%2f", "/").replace("%5c", "/")
    if "/." in path and any(seg in _DOT_SEGMENTS for seg in path.split("/")):
        raise Refusal(400, "bad_request", "a dot segment in the request path")
