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
  None when no such character is present. The rce rules see `text` and `cmd`.

The code checks run here too, since they need the raw value: NUL bytes (920270),
invalid percent-encoding (920220, raw path and query only: a decoded value may
legitimately hold a '%'), invalid UTF-8 once decoded (920250), IIS `%u` (920260),
control characters in the path (920271). They are returned as rule ids.

`is_trivial`: a value of word characters and `.,:@+-` without spaces (ids, numbers,
enums, e-mail addresses, tokens) cannot match any rule and skips all of this; most
API values are like that. The fast path: a printable ASCII value without '%', '&' or
'\\' has nothing to decode, no NUL and no control character, so `decoded` is just
its lower case (the result is the same as the full path's, only cheaper).
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_ROUNDS", "Forms", "is_trivial", "normalise"]

MAX_ROUNDS = 5

_TRIVIAL = re.compile(r"[\w.,:@+-]*")
_PCT = re.compile(r"%[0-9a-fA-F]{2}")
_BAD_PCT = re.compile(r"%(?![0-9a-fA-F]{2}|[uU][0-9a-fA-F]{4})")
_IIS = re.compile(r"%[uU]([0-9a-fA-F]{4})")
_JS_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|u\{([0-9a-fA-F]{1,6})\})")
_VERSIONED_COMMENT = re.compile(r"/\*!\d*(.*?)\*/", re.DOTALL)
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_SPACE = re.compile(r"\s+")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_CMD_DROP = re.compile(r"[\"'\\^]|\$@")
_IFS = re.compile(r"\$\{ifs\}|\$ifs\b")
# Look-alikes NFKC leaves alone but Windows' best-fit mapping turns into path syntax.
_BEST_FIT = str.maketrans({"\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u29f9": "\\"})


class Forms(NamedTuple):
    decoded: str
    text: str
    cmd: str | None
    anomalies: tuple[int, ...]


def is_trivial(value: str) -> bool:
    return _TRIVIAL.fullmatch(value) is not None


def _js_char(m: re.Match[str]) -> str:
    code = int(m.group(1) or m.group(2) or m.group(3), 16)
    return chr(code) if code <= 0x10FFFF else m.group(0)


def _iis_char(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def normalise(value: str, *, raw: bool = False, path: bool = False) -> Forms:
    """The forms of `value`; `raw`: it is still percent-encoded as received (path, query)."""
    if (
        value.isascii()
        and value.isprintable()
        and "%" not in value
        and "&" not in value
        and "\\" not in value
    ):
        return _forms(value.lower(), ())
    anomalies: list[int] = []
    s = value if value.isascii() else unicodedata.normalize("NFKC", value)
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
                data = unquote_to_bytes(s)
                try:
                    s = data.decode("utf-8")
                except UnicodeDecodeError:
                    anomalies.append(920250)
                    s = data.decode("utf-8", "replace")
        if "&" in s:
            s = html.unescape(s)
        if "\\" in s:
            s = _JS_ESCAPE.sub(_js_char, s)
        if not s.isascii():  # a full-width '%25' decodes further once folded
            s = unicodedata.normalize("NFKC", s)
        if s == before:
            break
    if "\x00" in s:
        anomalies.append(920270)
        s = s.replace("\x00", "")
    if path and _CTL.search(s):
        anomalies.append(920271)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s).translate(_BEST_FIT).casefold()
    else:
        s = s.lower()
    return _forms(s, tuple(dict.fromkeys(anomalies)))


def _forms(decoded: str, anomalies: tuple[int, ...]) -> Forms:
    s = decoded
    if "/*" in s:
        s = _VERSIONED_COMMENT.sub(r" \1 ", s)
        s = _COMMENT.sub(" ", s)
    text = _SPACE.sub(" ", s) if "  " in s or not s.isprintable() else s
    cmd = None
    if _CMD_DROP.search(text) or "$" in text:
        c = _IFS.sub(" ", _CMD_DROP.sub("", text))
        cmd = c if c != text else None
    return Forms(decoded, text, cmd, anomalies)
