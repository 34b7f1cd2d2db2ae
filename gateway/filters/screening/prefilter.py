"""The prefilter: every rule at once, in one native scan (Hyperscan), over many values.

Why. CPython's `re` runs one rule at a time at 25-100 ns per character; a 4 KB JSON
body against ~40 rules cost ~0.9 ms. Hyperscan compiles all rules into one automaton
and scans at ~2 ns per byte here, and one scan of the whole body joined costs the
same as one per value, so values are not visited one by one in Python either.

What is scanned. Values are joined with SEP (\x02) and decoded once as a whole
(normalise.decode is segment-local, see its notes). The *text buffer* is that decoded
text with every non-ASCII character replaced by an ASCII proxy of the same regex
class (whitespace -> ' ', decimal digit -> '0', other alphanumeric -> 'a', anything
else -> \x01; one bytes.translate for Latin-1 text), its whitespace collapsed as the
text form's is; it is scanned with every rule, the rules also matched on the
command-line form (quotes, `\\`, `^` deleted) in their `tolerant` form: those
characters may follow any atom, so `c'a't` matches as `cat` does and no second buffer
is made for them (a body of prose is full of apostrophes: a second buffer and scan
cost ~5 us per 4 KB; the tolerant patterns ~1.5 us). The *cmd buffer* (the form's
other rewrites, `$@` deleted and `${IFS}` as a space), only when one occurs, is scanned
with those rules; the *decoded buffer* (line breaks intact; head values only), when it
differs, with the rules matched on the decoded form. Three special patterns in the
text database say, for free, whether the first buffer was not yet collapsed (then it
is, and scanned again), whether a cmd buffer is needed, and whether `/*` occurs (SQL
comment removal could cross values: the caller scans value by value). A hit's end
offset says which value it lies in: the number of SEP before it. A body's buffer
comes from normalise.decode_latin1 (bytes, one pass) when its text is Latin-1 with
nothing to decode.

Why it cannot miss (the prefilter may only cost, never change a verdict):
- `relax(pattern)` deletes every zero-width assertion (`^ $ \\b \\B \\A \\Z` and
  look-arounds); deleting an assertion only widens what a pattern matches. Value edges
  (`^`, `$`) thus need no counterpart in the joined buffer.
- Each value's text form is a contiguous piece of the text buffer (segment-locality
  above; no `/*`, so no comment to remove) and its command-line form is that piece
  with some characters deleted (quotes, `\\`, `^`: a tolerant pattern matches the
  piece wherever its relaxed pattern matches the deleted form) or, with `$@` or
  `${IFS}`, a piece of the cmd buffer; the proxies match every class the
  original character matches in Python's Unicode `re` (`\\w`, `\\d`, `\\s`, `.`, the
  rules' negated classes) and no ASCII literal, and Python's `\\s` characters outside
  ASCII whitespace (\\x1c-\\x1f) become ' ' as the text form makes them.
- Hyperscan reports every end offset of every match (HS_FLAG_PREFILTER may add more,
  never fewer), with DOTALL (`.` also matches a line break: more, never fewer).
So a rule that matches a value matches its buffer piece, and the value is flagged for
that rule. tests/screening/test_prefilter.py checks the result rule by rule on both
corpora, and that decisions with and without the prefilter are identical.

A buffer whose decoding produced a SEP of its own (`%02`), or a scan that reports more
than _MAX_EVENTS matches, gives None: the caller scans value by value instead.
Databases are compiled once per rule set (~0.6 s for all) and shared; scans are not
thread-safe (one scratch per database), which the single-threaded event loop respects.
"""

from __future__ import annotations

import codecs
import functools
import operator
import re
from collections.abc import Collection, Sequence
from typing import Any

import hyperscan

from gateway.filters.screening.normalise import ENTITY_PREFILTER, LATIN1_FOLD
from gateway.filters.screening.rules import Rule

__all__ = [
    "JSON_BUFFER_TABLE",
    "LATIN1_BUFFER_TABLE",
    "SEP",
    "Prefilter",
    "Undecoded",
    "relax",
    "tolerant",
]

SEP = "\x02"
_SEP_BYTE = b"\x02"
_MAX_EVENTS = 4096
_END = operator.itemgetter(1)
# Case-blind: the rules match case-folded text, and an ASCII buffer need not be folded
# first (a JSON body's buffer is its bytes with quotes as SEP: body.py).
_FLAGS = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_CASELESS


@functools.lru_cache(maxsize=4096)
def _proxy_char(ch: str) -> str:
    if ch.isspace():
        return " "
    if ch.isdecimal():
        return "0"
    if ch.isalnum():
        return "a"
    return "\x01"


def _proxy(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeEncodeError)
    return "".join(map(_proxy_char, exc.object[exc.start : exc.end])), exc.end


_PROXY = "gateway-screening-proxy"
codecs.register_error(_PROXY, _proxy)

# One translation per buffer: Latin-1 bytes (text that encodes as Latin-1, most
# non-ASCII API text) to their proxies; Python's \s characters that Hyperscan's \s
# lacks (\x1c-\x1f) to ' '; for the text form also line breaks and tabs to ' ' (it
# turns every whitespace run into one space).
_LATIN1 = "".join(chr(c) if c < 128 else _proxy_char(chr(c)) for c in range(256))
_DECODED_TABLE = _LATIN1.translate(str.maketrans("\x1c\x1d\x1e\x1f", "    ")).encode("ascii")
# normalise.decode_latin1's case folding and the decoded buffer's translation in one.
LATIN1_BUFFER_TABLE = LATIN1_FOLD.translate(_DECODED_TABLE)
# The same for a JSON document's own bytes: its quotes become SEP (body.py).
JSON_BUFFER_TABLE = LATIN1_BUFFER_TABLE[:0x22] + _SEP_BYTE + LATIN1_BUFFER_TABLE[0x23:]
_TEXT_TABLE = _DECODED_TABLE.translate(bytes.maketrans(b"\t\n\x0b\x0c\r", b" " * 5))
_SPACES = re.compile(b"  +")
_CMD_DROP = re.compile(rb"[\"'\\^]|\$@")
_IFS = re.compile(rb"\$\{ifs\}|\$ifs\b", re.IGNORECASE)


def _ascii(value: str, table: bytes) -> bytes:
    if value.isascii():
        return value.encode("ascii").translate(table)
    try:
        return value.encode("latin-1").translate(table)
    except UnicodeEncodeError:
        return value.encode("ascii", _PROXY).translate(table)


def _cmd(text: bytes) -> bytes | None:
    """The command-line form of a text buffer, None when it is the same."""
    if b"$" in text:
        cmd = _IFS.sub(b" ", _CMD_DROP.sub(b"", text))
    else:
        cmd = text.translate(None, b"\"'\\^")
    return cmd if cmd != text else None


def relax(pattern: str) -> str:
    """`pattern` without its zero-width assertions: it matches wherever `pattern` does."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern[i + 1] not in "bBAZ":
                out.append(pattern[i : i + 2])
            i += 2
        elif c == "[":
            j = _class_end(pattern, i)
            out.append(pattern[i:j])
            i = j
        elif c in "^$":
            i += 1
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i)
        else:
            out.append(c)
            i += 1
    return "".join(out)


# What the command-line form deletes, as a pattern: `tolerant` lets it occur after every
# atom, so the text buffer matches wherever its command-line form would.
_JUNK = "[\"'\\\\^]*"
_COUNT = re.compile(r"\{\d*(?:,\d*)?\}")


def tolerant(relaxed: str) -> str:
    """`relaxed` (no assertions left) with `["'\\^]*` after every atom: it matches a text
    wherever `relaxed` matches that text with those characters deleted (`c'a't` as
    `cat`), so one scan of the text buffer stands for its command-line form too."""
    out: list[str] = []
    i, n = 0, len(relaxed)
    while i < n:
        c = relaxed[i]
        if c == "\\":
            atom, i = relaxed[i : i + 2], i + 2
        elif c == "[":
            j = _class_end(relaxed, i)
            atom, i = relaxed[i:j], j
        elif c == "(":
            j = i + 3 if relaxed.startswith("(?:", i) else i + 1
            out.append(relaxed[i:j])
            i = j
            continue
        elif c == "|":
            out.append(c)
            i += 1
            continue
        elif c == ")":
            q, i = _quantifier(relaxed, i + 1)
            out.append(")" + q)  # (the group's atoms already end with _JUNK)
            continue
        else:  # '.' or a literal character
            atom, i = c, i + 1
        q, i = _quantifier(relaxed, i)
        out.append(f"(?:{atom}{_JUNK}){q}" if q else atom + _JUNK)
    return "".join(out)


def _quantifier(p: str, i: int) -> tuple[str, int]:
    """The quantifier (and its lazy mark) at `i`, if any, and the index after it."""
    if i < len(p) and p[i] in "*+?":
        j = i + 1
    elif (m := _COUNT.match(p, i)) is not None:
        j = m.end()
    else:
        return "", i
    if j < len(p) and p[j] == "?":
        j += 1
    return p[i:j], j


def _class_end(p: str, i: int) -> int:
    """The index after the character class that opens at `i`."""
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while p[j] != "]":
        j += 2 if p[j] == "\\" else 1
    return j + 1


def _group_end(p: str, i: int) -> int:
    """The index after the group that opens at `i`."""
    depth = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(p, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced group in {p!r}")


# Special patterns in the text database (ids below any rule's): the buffer is not its
# text form yet (a whitespace run, or whitespace other than ' '), or it has a
# command-line form of its own. Cheaper than looking for those in Python (~4 us/4 KB).
_WS_ID, _CMD_ID, _COMMENT_ID, _ENTITY_ID = 1, 2, 3, 4
_SPECIALS = [
    (_WS_ID, rb"  |[\t\n\x0b\x0c\r\x1c-\x1f]"),
    (_CMD_ID, rb"\$(?:@|\{ifs\}|ifs)"),  # what `tolerant` does not stand for
    (_COMMENT_ID, rb"/\*"),  # the joined text form is not its values' text forms
    # Whatever html.unescape would replace (normalise.ENTITY_PREFILTER; case-blind: the
    # buffer is folded), for `segments(..., entities=True)`: the buffer of a Latin-1
    # text taken as having nothing to decode (normalise.latin1_bytes) was wrong.
    (_ENTITY_ID, ENTITY_PREFILTER),
]
_SPECIAL_FLAGS = [hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS] * len(_SPECIALS)


class Undecoded(Exception):
    """The buffer given to `segments(..., entities=True)` holds an HTML entity: it is
    not the decoded form of its text (the caller decodes, then scans again)."""


def _database(rules: Sequence[Rule], cmd: Collection[int], specials: bool = False) -> Any:
    """The relaxed patterns of `rules`, those in `cmd` made `tolerant`."""
    patterns = [
        (r.id, (tolerant(relax(r.pattern)) if r.id in cmd else relax(r.pattern)).encode())
        for r in rules
        if r.pattern is not None
    ]
    if specials:
        patterns += _SPECIALS
    if not patterns:
        return None
    db = hyperscan.Database()
    flags = [_FLAGS] * len(patterns)
    if specials:
        flags[-len(_SPECIALS) :] = _SPECIAL_FLAGS
    db.compile(expressions=[p for _, p in patterns], ids=[i for i, _ in patterns], flags=flags)
    return db


class _Events:
    """Matches of one buffer: (rule id, end offset), and which special patterns hit."""

    __slots__ = ("buf", "events", "specials")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.events: list[tuple[int, int]] = []
        self.specials: set[int] = set()


def _add_event(rule_id: int, _from: int, to: int, _flags: int, ev: Any) -> bool:
    if rule_id < 100:
        ev.specials.add(rule_id)
        return False
    ev.events.append((rule_id, to))
    return len(ev.events) > _MAX_EVENTS  # True stops the scan (ScanTerminated)


class Prefilter:
    """The relaxed patterns of `rules`, compiled into Hyperscan databases: all of them
    (and the special patterns) for the text buffer, those matched on the command-line
    form for its buffer, those matched on the decoded form for the decoded buffer."""

    __slots__ = ("_cmd", "_decoded", "_text", "rule_ids")

    def __init__(
        self, rules: Sequence[Rule], cmd: Collection[int], decoded: Collection[int]
    ) -> None:
        self.rule_ids = frozenset(r.id for r in rules if r.pattern is not None)
        self._text = _database(rules, cmd, specials=True)
        self._cmd = _database([r for r in rules if r.id in cmd], cmd)
        self._decoded = _database([r for r in rules if r.id in decoded], ())

    def _scan(self, db: Any, buf: bytes) -> _Events:
        ev = _Events(buf)
        if db is not None:
            db.scan(buf, match_event_handler=_add_event, context=ev)
        return ev

    def _all(self, value: str | bytes, *, collapsed: bool, decoded: str | None) -> list[_Events]:
        """Scan the buffers of `value` (its text form if `collapsed`, else a decoded form
        whose text form is it with whitespace collapsed; `decoded`: also scan that)."""
        # Untranslated whitespace, if any, makes _WS_ID hit: then the text form is made.
        if isinstance(value, bytes):  # decode_latin1(..., LATIN1_BUFFER_TABLE): the buffer
            raw = value
        elif value.isascii():
            raw = value.encode("ascii")
        else:
            raw = _ascii(value, _DECODED_TABLE)
        first = self._scan(self._text, raw)
        out = [first]
        text = first.buf
        if _WS_ID in first.specials and not collapsed:
            text = _SPACES.sub(b" ", raw.translate(_TEXT_TABLE))
            second = self._scan(self._text, text)
            second.specials |= first.specials
            out = [second]
            if decoded is not None:
                out.append(self._scan(self._decoded, raw.translate(_DECODED_TABLE)))
        elif decoded is not None and decoded != value:
            out.append(self._scan(self._decoded, _ascii(decoded, _DECODED_TABLE)))
        if _CMD_ID in out[0].specials and self._cmd is not None:
            cmd = _cmd(text)
            if cmd is not None:
                out.append(self._scan(self._cmd, cmd))
        return out

    def rules(self, text: str, decoded: str | None = None) -> set[int]:
        """The rule ids whose relaxed pattern matches one value's `text` form (collapsed,
        comments removed) or, with `decoded`, its decoded form."""
        return {
            rule_id
            for ev in self._all(text, collapsed=True, decoded=decoded)
            for rule_id, _ in ev.events
        }

    def segments(
        self,
        decoded: str | bytes,
        *,
        with_decoded: bool,
        spans: dict[int, tuple[int, int]] | None = None,
        entities: bool = False,
    ) -> dict[int, set[int]] | None:
        """For SEP-joined values whose joined decoded form is `decoded` (a str, or
        bytes: its buffer, from decode_latin1(joined, LATIN1_BUFFER_TABLE)): segment index
        -> the rule ids matching in it; None when the scan reported too many matches to
        be worth locating, or the text holds `/*`. `spans`, for bytes (one byte per
        character of the joined text): filled with each flagged segment's (start, end)
        in the joined text, unless whitespace had to be collapsed (offsets moved).
        `entities`: raise Undecoded if the buffer holds an HTML entity (a buffer made
        from bytes taken as needing no decoding, normalise.latin1_bytes)."""
        try:
            also = None
            if with_decoded:
                assert isinstance(decoded, str), "a head's decoded form is a str"
                also = decoded
            scans = self._all(decoded, collapsed=False, decoded=also)
        except hyperscan.ScanTerminated:
            return None
        if entities and _ENTITY_ID in scans[0].specials:
            raise Undecoded
        if _COMMENT_ID in scans[0].specials:
            return None  # comment removal could cross values: scan them one by one
        out: dict[int, set[int]] = {}
        for ev in scans:
            if not ev.events:
                continue
            buf = ev.buf
            aligned = spans if buf is decoded else None
            # The separators before a match's last character: its segment. Counted
            # from one match's end to the next's: one pass over the buffer in all.
            segment = pos = 0
            for rule_id, to in sorted(ev.events, key=_END):
                segment += buf.count(_SEP_BYTE, pos, to - 1)
                pos = to - 1
                out.setdefault(segment, set()).add(rule_id)
                if aligned is not None and segment not in aligned:
                    end = buf.find(_SEP_BYTE, pos)
                    start = buf.rfind(_SEP_BYTE, 0, pos) + 1
                    aligned[segment] = (start, len(buf) if end < 0 else end)
        return out

    def __repr__(self) -> str:
        return f"<Prefilter {len(self.rule_ids)} rules>"
