"""Normalisation: the forms of a value the rules are matched against.

An attacker writes `%253Cscript%253E`, `&#x3c;script>`, full-width `SELECT`, `UN/**/ION SELECT`,
`c'a't /etc/passwd`; the rules are written once, against the canonical text. For each
value `normalise` returns:

- `decoded`: URL-decoded (`%XX`, IIS `%uXXXX`) and HTML-entity-decoded (`&lt;`, `&#60;`,
  `&#x3c;`) and JS-escape-decoded (`\\x3c`, `\\u003c`), repeatedly until nothing changes,
  at most MAX_ROUNDS rounds (each encoding layer costs one round; a value needing more
  is unusual enough that what is left undecoded is still matched as text), NUL removed,
  lower-cased. The protocol rules (CR/LF injection) see this form, line breaks intact.
- `text`: `decoded` plus Unicode NFKC (full-width and compatibility forms folded),
  SQL comments `/* */` replaced by a space (MySQL's versioned `/*!50000 ... */` keeps
  its content, since MySQL runs it), whitespace runs collapsed to one space. The
  sqli, xss and traversal rules see this form.
- `cmd`: `text` with quotes, backslashes and carets removed and `$@`, `${IFS}` as a
  space, as CRS's `t:cmdLine` does (`c''at`, `c\\at`, `ca^t` are all `cat` to a shell);
  None when no such character is present. The shell-command rules (932) see
  `text` and `cmd`.

The code checks run here too, since they need the raw value: NUL bytes (920270),
invalid percent-encoding (920220, raw path and query only: a decoded value may
legitimately hold a '%'), invalid UTF-8 once decoded (920250), IIS `%u` (920260),
control characters in the path (920271). They are returned as rule ids.

`is_trivial`: a value of word characters and `.,:@+-` without spaces (ids, numbers,
enums, e-mail addresses, tokens) cannot match any rule and skips all of this; most
API values are like that. The fast paths: an ASCII value without '%', '&', '\\' or
NUL (and, for a path, without a control character) has nothing to decode, so
`decoded` is just its lower case; `decode_latin1` does the same in one pass for a
Latin-1 value whose characters all fold one to one (joined JSON bodies). Both give
what the full path gives, only cheaper (tests/screening/test_fuzz.py checks it).

Locality (what the whole-body prefilter in prefilter.py relies on). `decode` is
*segment-local*: for values joined by a separator character that is not a hex digit,
not alphanumeric and not one of `%&\\;#`, decoding the joined text gives the joined
decodings (every decoding window, `%XX`, `%uXXXX`, `&name;`, `&#..;`, `\\xXX`,
`\\u{..}`, lies inside one value; NFKC and case folding work per character around a
starter; a value that stops changing before MAX_ROUNDS stays unchanged in later
rounds). `_forms` is local too except SQL comment removal, which could run from one
value into the next: callers that join values check for `/*` first.

`decode_latin1` asks one small Hyperscan database (`_UNDECODED`) whether a Latin-1
value holds an HTML entity (`latin1_bytes` leaves that question to the prefilter's own
scan, which asks it on the way); like the prefilter's, its scans are not thread-safe
(one scratch), which the event loop respects.

Cost notes: html.unescape is skipped unless some '&' starts something it would
replace (`_ENTITY`: '&#', '&name;', or a name the HTML5 table accepts without ';');
the best-fit translation runs only when one of its four characters is present (a
str.translate with a dict costs ~60 ns per character of the whole value).
"""

from __future__ import annotations

import html
import html.entities
import re
import unicodedata
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

import hyperscan

__all__ = [
    "ENTITY_PREFILTER",
    "LATIN1_FOLD",
    "MAX_ROUNDS",
    "Forms",
    "decode",
    "decode_joined",
    "decode_latin1",
    "forms",
    "has_control",
    "is_trivial",
    "latin1_bytes",
    "latin1_foldable",
    "normalise",
]

MAX_ROUNDS = 5

_TRIVIAL = re.compile(r"[\w.,:@+-]*")
_PCT = re.compile(r"%[0-9a-fA-F]{2}")
_BAD_PCT = re.compile(r"%(?![0-9a-fA-F]{2}|[uU][0-9a-fA-F]{4})")
_IIS = re.compile(r"%[uU]([0-9a-fA-F]{4})")
_JS_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|u\{([0-9a-fA-F]{1,6})\})")
_DIGITS = re.compile(r"\d*")
_SPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_CMD_DROP = re.compile(r"[\"'\\^]|\$@")
_IFS = re.compile(r"\$\{ifs\}|\$ifs\b")
# Look-alikes NFKC leaves alone but Windows' best-fit mapping turns into path syntax.
_BEST_FIT = str.maketrans({"\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u29f9": "\\"})
# Whatever html.unescape would replace: a numeric reference, a named one with its ';',
# or (as a prefix) one of the names HTML5 accepts without ';' (html/__init__.py).
_NO_SEMICOLON = [k for k in html.entities.html5 if not k.endswith(";")]


def _trie(words: list[str]) -> str:
    """An alternation of `words` factored by common prefixes (one branch per character
    instead of one per word: ~5x faster at each '&')."""
    firsts = sorted({w[0] for w in words})
    alts = []
    for ch in firsts:
        rest = [w[1:] for w in words if w[0] == ch]
        tail = [r for r in rest if r]
        body = _trie(tail) if tail else ""
        alts.append(re.escape(ch) + (f"(?:{body})?" if tail and "" in rest else body))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


_ENTITY = re.compile(r"&(?:#|" + _trie(_NO_SEMICOLON) + r"|[A-Za-z0-9]{1,32}+;)")

# Latin-1 text (most non-ASCII API text) has fast paths for NFKC and case folding:
# its only characters with a compatibility mapping are these, and its only ones whose
# case folding is not a one-character lower case are U+00B5 and U+00DF.
_LATIN1_COMPAT = bytes(c for c in range(256) if unicodedata.normalize("NFKC", chr(c)) != chr(c))
_LATIN1_STABLE = bytes(c for c in range(256) if c not in _LATIN1_COMPAT)
LATIN1_FOLD = _LATIN1_FOLD = bytes(
    ord(chr(c).lower()) if len(chr(c).lower()) == 1 and ord(chr(c).lower()) < 256 else c
    for c in range(256)
)


# A superset of _ENTITY's matches (the same, less the possessive quantifier), for
# Hyperscan: here and in the prefilter's text database (prefilter._ENTITY_ID).
ENTITY_PREFILTER = ("&(?:#|[A-Za-z0-9]{1,32};|" + "|".join(sorted(_NO_SEMICOLON)) + ")").encode(
    "ascii"
)
# Latin-1 characters that do not fold one to one (a compatibility mapping, or a case
# folding that is not one character): `latin1_bytes` refuses text holding one.
_LATIN1_SPECIAL = bytes(sorted({*_LATIN1_COMPAT, 0xB5, 0xDF}))
_LATIN1_ONE_TO_ONE = bytes(c for c in range(256) if c not in _LATIN1_SPECIAL)
_UNDECODED = hyperscan.Database()
_UNDECODED.compile(expressions=[ENTITY_PREFILTER], ids=[1], flags=[hyperscan.HS_FLAG_SINGLEMATCH])


def _nfkc(s: str) -> str:
    """NFKC, and a lone UTF-16 surrogate (a header decoded with surrogateescape) as
    U+FFFD: one character for one, so that decoding stays segment-local."""
    try:
        data = s.encode("latin-1")
    except UnicodeEncodeError:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = _SURROGATE.sub("\ufffd", s)
        return unicodedata.normalize("NFKC", s)
    if data.translate(None, _LATIN1_STABLE):  # a character with a compatibility mapping
        return unicodedata.normalize("NFKC", s)
    return s


def _fold(s: str) -> str:
    """s.casefold(), ~20x faster for Latin-1 text."""
    try:
        data = s.encode("latin-1")
    except UnicodeEncodeError:
        return s.casefold()
    if b"\xb5" in data or b"\xdf" in data:
        return s.casefold()
    return data.translate(_LATIN1_FOLD).decode("latin-1")


class Forms(NamedTuple):
    decoded: str
    text: str
    cmd: str | None
    anomalies: tuple[int, ...]


def is_trivial(value: str) -> bool:
    return _TRIVIAL.fullmatch(value) is not None


def has_control(decoded: str) -> bool:
    """A control character (the path check 920271, on a decoded path)."""
    return _CTL.search(decoded) is not None


def _char(code: int) -> str:
    """A decoded escape's character; a UTF-16 surrogate alone is not a character (it
    would make the next round's percent-decoding fail to encode), so it becomes U+FFFD
    as html.unescape does."""
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)


def _js_char(m: re.Match[str]) -> str:
    code = int(m.group(1) or m.group(2) or m.group(3), 16)
    return _char(code) if code <= 0x10FFFF else m.group(0)


def _iis_char(m: re.Match[str]) -> str:
    return _char(int(m.group(1), 16))


def normalise(value: str, *, raw: bool = False, path: bool = False) -> Forms:
    """The forms of `value`; `raw`: it is still percent-encoded as received (path, query)."""
    return forms(*decode(value, raw=raw, path=path))


def decode(value: str, *, raw: bool = False, path: bool = False) -> tuple[str, tuple[int, ...]]:
    """The `decoded` form of `value` and the code checks' rule ids it raised."""
    decoded, anomalies, _ = _decode(value, raw, path)
    return decoded, anomalies


def decode_joined(value: str, *, raw: bool = False) -> tuple[str, tuple[int, ...], bool]:
    """`decode` for values joined by a separator, and whether an escape (percent,
    entity, backslash) was decoded: only then can a separator have been made."""
    return _decode(value, raw, False)


def decode_latin1(value: str, table: bytes | None = None) -> bytes | None:
    """`decode(value)` (not raw, not a path) in one pass, as Latin-1 bytes, for a value
    with nothing to decode: Latin-1 text without '%', '\\', NUL, an HTML entity, a
    character NFKC changes or one whose case folding is not one character (then the
    decoded form is its case folding); None for any other value. `table`: a
    translation applied after case folding, in the same pass (LATIN1_FOLD composed with
    it, as bytes.translate(LATIN1_FOLD, table) makes it)."""
    data = latin1_bytes(value)
    if data is None or ("&" in value and _needs_decoding(data)):
        return None
    return data.translate(_LATIN1_FOLD if table is None else table)


def latin1_bytes(value: str) -> bytes | None:
    """`value` as Latin-1 bytes if decoding it can only be case folding, one character
    for one, *or an HTML entity*: no '%', '\\' or NUL, every character Latin-1 and
    folding one to one; else None. The joined body's fast path: its buffer is these
    bytes translated (prefilter.LATIN1_BUFFER_TABLE), and the scan of that buffer says
    whether it holds an entity (Prefilter.segments(..., entities=True)), which saves a
    pass of its own over the body (decode_latin1 makes that pass)."""
    if "%" in value or "\\" in value or "\x00" in value:
        return None
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return data if data.isascii() or latin1_foldable(data) else None


def latin1_foldable(data: bytes) -> bool:
    """Latin-1 `data` has no character whose NFKC or case folding is not itself or one
    other character (bytes.translate deleting the rest: one C pass)."""
    return not data.translate(None, _LATIN1_ONE_TO_ONE)


def _stop(*_: object) -> bool:
    return True  # (stops the scan: ScanTerminated)


def _needs_decoding(data: bytes) -> bool:
    """Latin-1 `data` holds an HTML entity (one Hyperscan pass: ~3x cheaper than the
    regex)."""
    try:
        _UNDECODED.scan(data, match_event_handler=_stop)
    except hyperscan.ScanTerminated:
        return True
    return False


def _decode(value: str, raw: bool, path: bool) -> tuple[str, tuple[int, ...], bool]:
    if (
        value.isascii()
        and "%" not in value
        and "&" not in value
        and "\\" not in value
        and "\x00" not in value
        and (not path or value.isprintable())  # (920271: a control character in a path)
    ):
        return value.lower(), (), False
    anomalies: list[int] = []
    s = value if value.isascii() else _nfkc(value)
    start = s
    if raw and "%" in s and _BAD_PCT.search(s):
        anomalies.append(920220)
    for _ in range(MAX_ROUNDS):
        before = s
        if "%" in s:
            if "%u" in s or "%U" in s:
                s2 = _IIS.sub(_iis_char, s)
                if s2 != s:
                    anomalies.append(920260)
                    s = s2
            if _PCT.search(s):
                data = unquote_to_bytes(s)  # (no lone surrogate is left: _nfkc, _char)
                try:
                    s = data.decode("utf-8")
                except UnicodeDecodeError:
                    anomalies.append(920250)
                    s = data.decode("utf-8", "replace")
        if "&" in s and _ENTITY.search(s):
            s = html.unescape(s)
        if "\\" in s:
            s = _JS_ESCAPE.sub(_js_char, s)
        if s == before:
            break
        if not s.isascii():  # a full-width '%25' decodes further once folded
            s = _nfkc(s)  # (NFKC is idempotent: only what a round changed needs it)
    unescaped = s is not start  # (every escape-decoding step makes a new string)
    if "\x00" in s:
        anomalies.append(920270)
        s = s.replace("\x00", "")
    if path and _CTL.search(s):
        anomalies.append(920271)
    if not s.isascii():
        if s is not start:  # (`start` is NFKC already)
            s = _nfkc(s)
        if "\u2215" in s or "\u2044" in s or "\u29f8" in s or "\u29f9" in s:
            s = s.translate(_BEST_FIT)
        s = _fold(s)
    else:
        s = s.lower()
    return s, tuple(dict.fromkeys(anomalies)), unescaped


def _uncomment(s: str, *, versioned: bool) -> str:
    """`re.sub(r"/\\*!\\d*(.*?)\\*/", r" \\1 ", s, flags=re.S)` (`versioned`: MySQL's
    versioned comment keeps its content) or `re.sub(r"/\\*.*?\\*/", " ", s, flags=re.S)`
    in linear time. The regexes try every '/*' against the rest of the text, so a text of
    unterminated openers (`/*!` x 21,000: 64 KiB) cost them seconds; here a comment
    ends at the first '*/' after its opener, as their lazy match does, and once no
    '*/' follows an opener, none follows any later one: the rest stays as it is."""
    opener = "/*!" if versioned else "/*"
    out: list[str] = []
    pos = 0
    while (i := s.find(opener, pos)) >= 0:
        start = i + len(opener)
        j = s.find("*/", start)
        if j < 0:
            break
        out.append(s[pos:i])
        if versioned:  # (the version's digits are dropped, MySQL runs the rest)
            digits = _DIGITS.match(s, start, j)
            out.append(f" {s[digits.end() if digits else start : j]} ")
        else:
            out.append(" ")
        pos = j + 2
    if not out:
        return s
    out.append(s[pos:])
    return "".join(out)


def forms(decoded: str, anomalies: tuple[int, ...] = ()) -> Forms:
    """The text and command-line forms of a `decoded` value."""
    s = decoded
    if "/*" in s:
        s = _uncomment(_uncomment(s, versioned=True), versioned=False)
    text = _SPACE.sub(" ", s) if "  " in s or not s.isprintable() else s
    cmd = None
    if _CMD_DROP.search(text) or "$" in text:
        c = _IFS.sub(" ", _CMD_DROP.sub("", text))
        cmd = c if c != text else None
    return Forms(decoded, text, cmd, anomalies)
