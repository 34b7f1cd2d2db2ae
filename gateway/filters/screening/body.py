"""Request bodies: which values of an inspected body prefix are scanned, and where.

- JSON (`application/json`, `+json`, or no type and a leading `{`/`[`): string values
  and keys, located by JSON path (`body:$.items[2].name`). A complete body is parsed
  (orjson) so that one that does not parse scores 200002, as CRS's REQBODY_ERROR does;
  then its *raw text* is what the prefilter scans, not its parsed values (visiting
  ~200 strings in Python cost more than the whole scan): every structural '"' becomes
  the prefilter's separator, escapes are decoded run by run (orjson), so the text is
  exactly the document's strings (odd segments) between its punctuation and numbers
  (even segments), and only the strings a rule may match are looked up in the parsed
  document and scanned (cut out of the text by the spans the scan reports, and looked
  up by a walk that stops once it has found as many as the text holds). A body cut
  at the inspection size is scanned literal by literal (its last, truncated one
  dropped).
- Forms (`application/x-www-form-urlencoded`): each field's name and value, by name
  (`body:comment`); a truncated body's last field is dropped.
- Multipart (`multipart/form-data`, RFC 7578): each complete part's field name and
  filename, a field's value, and a file's content when it is text (a `text/*`, JSON or
  XML type, or no type and valid UTF-8 without NUL), all at `body:<field name>`; binary
  content is not inspected. A complete body without its boundary or closing
  delimiter scores 200002. A truncated body's last, incomplete part is dropped.
- `text/*`, XML, GraphQL, or no type: the text as one value (`body`).
Other types (binary) are not inspected.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import re
from email.message import Message
from typing import Any
from urllib.parse import unquote

import orjson
import simdjson

from gateway.filters.screening.matcher import Hit, Item, Matcher
from gateway.filters.screening.normalise import latin1_foldable
from gateway.filters.screening.prefilter import (
    JSON_BUFFER_TABLE,
    LATIN1_BUFFER_TABLE,
    SEP,
    Undecoded,
)

__all__ = ["pairs", "safe_name", "scan_body"]

_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
# A run of JSON escapes; it starts with a literal so that `re` skips to it in C.
_ESCAPE_RUN = re.compile(r"\\(?:u[0-9a-fA-F]{4}|[^u])(?:\\(?:u[0-9a-fA-F]{4}|[^u]))*")
_ESCAPE_RUN_BYTES = re.compile(_ESCAPE_RUN.pattern.encode())
# What an escape may decode to on `_buffer`'s path: not '%', '\\', NUL or SEP.
_UNESCAPED_OK = bytes(c for c in range(256) if c not in b"%\\\x00\x02")
_UNSAFE = re.compile(r"[^\x21-\x7e]")
_BOM = b"\xef\xbb\xbf"
_SEP_BYTE = SEP.encode("ascii")
# One parser, reused (its buffers grow to the largest body seen, up to the inspection
# size); like the prefilter's scratch, not thread-safe, which the event loop respects.
_SIMDJSON = simdjson.Parser()
_MAX_NAME = 64
_TEXT_TYPES = ("application/json", "application/xml", "application/graphql")
# A multipart part's header block, parsed by hand: the stdlib's email parser costs ~20
# us a part, and 64 KiB of tiny parts would make a request cost 26 ms.
_DISPOSITION = re.compile(r"(?im)^content-disposition:[ \t]*form-data\b([^\r\n]*)")
_CONTENT_TYPE = re.compile(r"(?im)^content-type:[ \t]*([^;\r\n]*)")
_PARAM = re.compile(r';\s*([\w*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
_QUOTED_PAIR = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=4096)  # names repeat: header, cookie, parameter names
def safe_name(name: str) -> str:
    """A client-chosen name as it may appear in a log line: printable, short."""
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME] + "..."
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", name)


def pairs(text: str, kind: str, prefix: str) -> list[Item]:
    """`a=1&b=2` (query or form), still percent-encoded: each name and value."""
    items: list[Item] = []
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if "+" in piece:
            name, value = name.replace("+", " "), value.replace("+", " ")
        location = prefix + safe_name(unquote(name) if "%" in name else name)
        items.append((name, kind, location))
        if value:
            items.append((value, kind, location))
    return items


def scan_body(m: Matcher, media: str, content_type: str, data: bytes, complete: bool,
              hits: list[Hit]) -> None:  # fmt: skip
    """Scan what `data` (the inspected prefix; `complete`: the whole body) holds."""
    if media == "application/json" or media.endswith("+json"):
        _scan_json(m, data, complete, hits)
    elif media == "application/x-www-form-urlencoded":
        text = data.decode("latin-1")
        if not complete:
            text = text.rpartition("&")[0]
        m.scan_items(pairs(text, "body", "body:"), hits)
    elif media == "multipart/form-data":
        _scan_multipart(m, content_type, data, complete, hits)
    elif media.startswith("text/") or media in ("application/xml", "application/graphql"):
        m.scan(data.decode("utf-8", "replace"), "body", "body", hits)
    elif not media:
        if data.lstrip()[:1] in (b"{", b"["):
            _scan_json(m, data, complete, hits)
        else:
            m.scan(data.decode("utf-8", "replace"), "body", "body", hits)


# -- JSON --------------------------------------------------------------------------------


def _scan_json(m: Matcher, data: bytes, complete: bool, hits: list[Hit]) -> None:
    if not complete:  # each complete string literal, decoded as JSON would
        items: list[Item] = []
        for lit in _JSON_STRING.finditer(data.decode("utf-8", "replace")):
            raw = lit.group(1)
            if "\\" in raw:
                with contextlib.suppress(orjson.JSONDecodeError):
                    raw = orjson.loads(f'"{raw}"')
            items.append((raw, "body", "body"))
        m.scan_items(items, hits)
        return
    if not _parses(data):
        m.flag(200002, "body", "body", hits)
        m.scan(data.decode("utf-8", "replace"), "body", "body", hits)
        return
    spans: dict[int, tuple[int, int]] = {}
    joined: str | None = None  # (made only where needed: most bodies flag nothing)
    buf = _buffer(data)
    try:
        if buf is None:
            raise Undecoded
        segments = m.buffer_candidates(buf, spans)
    except Undecoded:  # (something to decode after all: the general path)
        joined = _joined(data)
        segments = None if joined is None else m.candidates(joined, "body", spans=spans)
    if segments is not None and not segments:
        return  # nothing may match: the document is never parsed into objects
    doc = orjson.loads(data)
    if segments is None:
        _walk(m, doc, hits)
        return
    if joined is None:
        joined = _joined(data)
        assert joined is not None, "_buffer made its buffer"
    flagged = _flagged(joined, segments, spans)
    if flagged:
        # Every occurrence in the text (SEP around: string segments are never adjacent,
        # so none is missed; an equal non-string segment only counts one too many).
        expected = sum(joined.count(f"{SEP}{value}{SEP}") for value in flagged)
        for value, trail in _find(doc, flagged, expected):
            m.scan(value, "body", _json_path(trail), hits, only=flagged[value])


def _parses(data: bytes) -> bool:
    """Whether `data` is a JSON document, as orjson.loads decides (RFC 8259, UTF-8,
    nesting up to 1,024). simdjson answers without making any object (~2 us for 4 KB
    against orjson's ~9); where it refuses, orjson has the last word (it refuses an
    integer over 64 bits that orjson takes). A byte-order mark, which simdjson skips
    and orjson refuses, is refused here."""
    if data.startswith(_BOM):
        return False
    try:
        _SIMDJSON.parse(data)  # (the result is dropped at once: the parser is reused)
    except (ValueError, RuntimeError):
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
    return True


def _flagged(
    joined: str, segments: dict[int, set[int]], spans: dict[int, tuple[int, int]]
) -> dict[str, set[int]]:
    """The flagged strings (odd segments: inside a string literal) -> their rules; cut
    out of `joined` by their spans where known (splitting 4 KB into its ~300 segments
    costs ~10 us), else by splitting."""
    odd = [index for index in segments if index % 2 == 1]
    values: list[str | None]
    if all(index in spans for index in odd):
        values = [joined[slice(*spans[index])] for index in odd]
    else:
        parts = joined.split(SEP)
        values = [parts[index] if index < len(parts) else None for index in odd]
    flagged: dict[str, set[int]] = {}
    for index, value in zip(odd, values, strict=True):
        if value is not None:
            flagged.setdefault(value, set()).update(segments[index])
    return flagged


def _buffer(data: bytes) -> bytes | None:
    """What the prefilter scans for a document that parses: `_joined(data)` as Latin-1
    bytes translated by LATIN1_BUFFER_TABLE (for ASCII, only its quotes as SEP: the
    scan is case-blind and valid JSON holds no raw control character), made from the
    bytes in one pass and a splice per escape run, without the str (~3x cheaper); None
    where `_joined` has something to decode ('%', a backslash once unescaped, NUL, SEP)
    or a character outside Latin-1 or not folding one to one: the caller takes the
    general path."""
    if b"%" in data:
        return None
    if data.isascii():
        buf = data.replace(b'"', _SEP_BYTE)
    else:
        try:
            data = data.decode("utf-8").encode("latin-1")  # (one byte per character)
        except UnicodeError:
            return None
        if not latin1_foldable(data):
            return None
        buf = data.translate(JSON_BUFFER_TABLE)
    # One byte for one so far: `data`'s offsets hold in `buf`. Each escape run is
    # replaced by what it decodes to (a quote stays a quote: it is inside a string).
    i = data.find(b"\\")
    if i < 0:
        return buf
    view = memoryview(buf)
    out: list[bytes | memoryview] = []
    pos = 0
    while i >= 0:
        m = _ESCAPE_RUN_BYTES.match(data, i)
        if m is None:  # (the document parsed: every '\\' starts an escape)
            return None
        run = m.group()
        piece = _ESCAPES.get(run)
        if piece is None and (piece := _unescaped(run)) is None:
            return None
        out.append(view[pos:i])
        out.append(piece)
        pos = m.end()
        i = data.find(b"\\", pos)
    out.append(view[pos:])
    return b"".join(out)


def _unescaped(run: bytes) -> bytes | None:
    """A run of JSON escapes decoded and translated for the buffer; None if it decodes
    to a character `_buffer` cannot take: '%', '\\', NUL, SEP, one outside Latin-1
    or not folding one to one."""
    try:
        text: bytes = orjson.loads(b'"' + run + b'"').encode("latin-1")
    except (orjson.JSONDecodeError, UnicodeEncodeError):
        return None
    if text.translate(None, _UNESCAPED_OK) or not latin1_foldable(text):
        return None
    return text.translate(LATIN1_BUFFER_TABLE)


def _single_escapes() -> dict[bytes, bytes]:
    """Every one-escape run `_buffer` may meet most (the two-character escapes and
    `\\u00XX`, any case of hex digit) -> its piece of the buffer, where it has one."""
    runs = [b"\\" + bytes([c]) for c in b'"/bfnrt\\']
    for code in range(256):
        for digits in {f"{code:02x}", f"{code:02X}", f"{code:02x}".capitalize()}:
            runs += [f"\\u00{digits}".encode(), f"\\u00{digits.swapcase()}".encode()]
    return {run: piece for run in runs if (piece := _unescaped(run)) is not None}


_ESCAPES = _single_escapes()


def _joined(data: bytes) -> str | None:
    """The document's strings as they parse, between SEP (its structural quotes), with
    its punctuation and numbers; None if that cannot be made exact."""
    try:
        text = data.decode("utf-8")  # orjson accepted it: valid UTF-8
    except UnicodeDecodeError:
        return None
    joined = text.replace('"', SEP)
    if "\\" in joined:  # (a string holding SEP itself can only write it `\u0002`)
        try:
            joined = _unescape_runs(joined)
        except (orjson.JSONDecodeError, _HoldsSep):
            return None
    return joined


def _unescape_runs(joined: str) -> str:
    """Each run of escapes decoded; found with str.find (memchr), which is ~10x faster
    than `re` looking for the runs' first character itself."""
    out: list[str] = []
    pos = 0
    find, match = joined.find, _ESCAPE_RUN.match
    while (i := find("\\", pos)) >= 0:
        m = match(joined, i)
        if m is None:  # (orjson accepted the document: every '\\' starts an escape)
            raise orjson.JSONDecodeError("not an escape", joined, i)
        out.append(joined[pos:i])
        out.append(_unescape(m))
        pos = m.end()
    out.append(joined[pos:])
    return "".join(out)


class _HoldsSep(Exception):
    """An escape run decodes to SEP: the joined text would have a segment too many."""


def _unescape(m: re.Match[str]) -> str:
    decoded: str = orjson.loads('"' + m.group().replace(SEP, '"') + '"')
    if SEP in decoded:
        raise _HoldsSep
    return decoded


def _walk(m: Matcher, doc: Any, hits: list[Hit]) -> None:
    """Scan every string of a parsed JSON document (keys too), located by JSON path.
    Iterative: orjson parses 1024 levels, deeper than Python's recursion limit."""
    stack: list[tuple[Any, str]] = [(doc, "body:$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            m.scan(node, "body", path, hits)
            continue
        children: list[tuple[Any, str]] = []
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{safe_name(key)}"
                m.scan(key, "body", sub, hits)
                if isinstance(value, str | dict | list):
                    children.append((value, sub))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str | dict | list):
                    children.append((value, f"{path}[{i}]"))
        stack.extend(reversed(children))


def _find(
    doc: Any, flagged: dict[str, set[int]], expected: int
) -> list[tuple[str, tuple[str | int, ...]]]:
    """The flagged strings of a parsed JSON document and where they are (the keys and
    indexes leading there), without formatting a path for the others. Iterative; stops
    once `expected` occurrences are found (the text's count: a duplicate key makes it
    more than the document holds, and the walk then simply goes to the end)."""
    found: list[tuple[str, tuple[str | int, ...]]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack and len(found) < expected:
        node, trail = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in flagged:
                    found.append((key, (*trail, key)))
                if isinstance(value, str):
                    if value in flagged:
                        found.append((value, (*trail, key)))
                elif isinstance(value, dict | list):
                    stack.append((value, (*trail, key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    if value in flagged:
                        found.append((value, (*trail, i)))
                elif isinstance(value, dict | list):
                    stack.append((value, (*trail, i)))
        elif isinstance(node, str) and node in flagged:
            found.append((node, trail))
    return found


def _json_path(trail: tuple[str | int, ...]) -> str:
    return "body:$" + "".join(
        f"[{step}]" if isinstance(step, int) else f".{safe_name(step)}" for step in trail
    )


# -- multipart ---------------------------------------------------------------------------


def _scan_multipart(m: Matcher, content_type: str, data: bytes, complete: bool,
                    hits: list[Hit]) -> None:  # fmt: skip
    msg = Message()
    msg["Content-Type"] = content_type
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        m.flag(200002, "body", "body", hits)
        return
    parts, ok = _parts(data, boundary.encode("latin-1", "replace"), complete)
    if not ok:
        m.flag(200002, "body", "body", hits)
    items: list[Item] = []
    for head, content in parts:
        items.extend(_part_items(head, content))
    m.scan_items(items, hits)


def _parts(data: bytes, boundary: bytes, complete: bool) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The complete parts (header block, content), and whether the framing was sound."""
    delim = b"--" + boundary
    start = data.find(delim)
    if start < 0 or (start > 0 and data[start - 2 : start] != b"\r\n"):
        return [], not complete
    out: list[tuple[bytes, bytes]] = []
    pos = start + len(delim)
    while True:
        if data[pos : pos + 2] == b"--":
            return out, True  # the closing delimiter
        nxt = data.find(b"\r\n" + delim, pos)
        if nxt < 0:
            return out, not complete
        part = data[pos:nxt]
        part = part[2:] if part.startswith(b"\r\n") else part
        if part.startswith(b"\r\n"):
            head, content = b"", part[2:]  # RFC 2046 5.1.1: no header fields
        else:
            head, _, content = part.partition(b"\r\n\r\n")
        out.append((head, content))
        pos = nxt + 2 + len(delim)


def _part_items(head: bytes, content: bytes) -> list[Item]:
    text = head.decode("utf-8", "replace")
    disposition = _DISPOSITION.search(text)
    params = _params(disposition.group(1)) if disposition else {}
    name = params.get("name", "")
    location = "body:" + safe_name(name)
    items: list[Item] = [(name, "body", location)] if name else []
    # Both forms when both are given: the upstream may read either (RFC 6266 4.3).
    filenames = {params[k] for k in ("filename", "filename*") if k in params}
    items.extend((f, "body", location) for f in sorted(filenames))
    filename = next(iter(filenames), None)
    ctype_m = _CONTENT_TYPE.search(text)
    ctype = ctype_m.group(1).strip().lower() if ctype_m else ""
    if filename is None or _textual(ctype, content):
        value = content.decode("utf-8", "replace")
        if value:
            items.append((value, "body", location))
    return items


def _params(header: str) -> dict[str, str]:
    """Content-Disposition parameters (RFC 6266): quoted or token values; `name*` and
    `filename*` in RFC 8187's charset'language'percent-encoded form, decoded."""
    out: dict[str, str] = {}
    for m in _PARAM.finditer(header):
        key = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if m.group(2) is not None and "\\" in value:
            value = _QUOTED_PAIR.sub(r"\1", value)
        if key.endswith("*"):
            charset, _, rest = value.partition("'")
            value = unquote(rest.partition("'")[2], encoding=_charset(charset), errors="replace")
        out.setdefault(key, value)
    return out


def _charset(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def _textual(ctype: str, content: bytes) -> bool:
    """A file part whose content is worth scanning as text."""
    if ctype.startswith("text/") or ctype in _TEXT_TYPES or ctype.endswith(("+json", "+xml")):
        return True
    if ctype:
        return False
    if b"\x00" in content:
        return False
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
