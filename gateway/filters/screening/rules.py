"""The screening rules: id, category, severity score, pattern, where it applies.

Ids and severities follow the OWASP Core Rule Set's numbering and scoring (930 path
traversal, 932 remote command execution, 941 XSS, 942 SQL injection, 920/921 protocol;
critical 5, error 4, warning 3, notice 2), so a CRS-literate operator can read a log
line. The patterns are ours, written for API traffic at roughly CRS paranoia level 1:
a critical rule must be an attack shape on its own; anything prose or code may also
say (an apostrophe before "or", "select ... from" in a sentence, `exec(` in a Python
snippet) is a warning that only blocks together with something else.

Patterns see the *normalised* value (gateway/filters/screening/normalise.py): URL and
HTML entities decoded, NFKC, lower case, SQL comments replaced by a space, whitespace
collapsed to one space. The shell-command rules (932xxx) see the command-line form as
well (quotes, backslashes and carets removed, `${IFS}` as a space), as CRS's
`t:cmdLine` does for its 932 rules; the PHP and template rules (933, 934) do not (a
quote inside a PHP function name does not make it run).

Rules with `pattern=None` are checks done in code by the normaliser (NUL, invalid
percent-encoding or UTF-8, an unparseable body); they are listed here so that ids,
scores and exclusions work the same for them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ALL_KINDS", "KINDS", "RULES", "RULES_BY_ID", "Rule"]

KINDS = ("path", "query", "header", "cookie", "body")
ALL_KINDS = frozenset(KINDS)
_NOT_BODY = frozenset({"path", "query", "header", "cookie"})

CRITICAL, ERROR, WARNING, NOTICE = 5, 4, 3, 2


class Rule(NamedTuple):
    id: int
    category: str
    score: int
    pattern: str | None
    description: str
    kinds: frozenset[str] = ALL_KINDS
    # The form matched (normalise.py): "text" (collapsed), "decoded" (line breaks kept),
    # "cmd" (text and its command-line form); the 932xxx rules' default is "cmd".
    form: str = "text"


# Unix commands an injected command line runs. The short ones (id, ls, ps, ...) are also
# English words, so the rule wants a shell-ish separator before and argument shape after.
_CMDS = (
    r"(?:cat|tac|ls|id|whoami|uname|pwd|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|dash|"
    r"python[23]?|perl|ruby|php|nslookup|dig|ping|echo|rm|chmod|chown|kill|ps|ifconfig|"
    r"env|printenv|sleep|touch|mkdir|head|tail|base64|sudo|telnet|ssh|scp|"
    r"powershell|cmd|more|less|nl|od|xxd|find|awk|sed|grep|socat|tftp|sysinfo|net|"
    r"systeminfo|hostname|certutil|timeout|xterm|lwp-download|fetch)"
)
# Commands that are not English words: a pipe before them is enough.
_STRONG = (
    r"(?:cat|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|python[23]?|perl|"
    r"ruby|php|nslookup|ifconfig|printenv|base64|telnet|socat|tftp|xxd|powershell|cmd|"
    r"systeminfo|certutil)"
)
# What follows a command: the end, a separator, or an argument that looks like one.
_ARGS = r"(?:\s*$|\s*[;&`)<>]|\s+(?:-|/|\$|~|\.|\d|https?:|[\w.-]*/))"
_SQL_QUOTE = r"['\"`]"

RULES: tuple[Rule, ...] = (
    # -- protocol anomalies (checks in code) -------------------------------------------
    Rule(920270, "protocol", CRITICAL, None, "NUL byte in a decoded value"),
    Rule(920220, "protocol", CRITICAL, None, "invalid percent-encoding", _NOT_BODY),
    Rule(920250, "protocol", CRITICAL, None, "invalid UTF-8 after decoding", _NOT_BODY),
    Rule(920260, "protocol", WARNING, None, "IIS %u encoding", _NOT_BODY),
    Rule(920271, "protocol", CRITICAL, None, "control character in the path", frozenset({"path"})),
    Rule(
        200002,
        "protocol",
        CRITICAL,
        None,
        "body does not parse as its Content-Type",
        frozenset({"body"}),
    ),
    Rule(
        921130,
        "protocol",
        CRITICAL,
        r"[\r\n][\t ]*(?:set-cookie|location|content-(?:type|length|disposition)|refresh|"
        r"host|cookie|x-[\w-]+|via|transfer-encoding|http/\d)[\t ]*[:/]|"
        r"\r?\n\r?\n|[\r\n]\s*<\s*(?:html|script|body|!doctype)",
        "CR/LF followed by a header or a body: header injection / response splitting",
        _NOT_BODY,
        "decoded",
    ),
    Rule(
        921140,
        "protocol",
        CRITICAL,
        r"[\r\n]",
        "CR or LF in the path or a header value",
        frozenset({"path", "header"}),
        "decoded",
    ),
    # -- path traversal (930) ------------------------------------------------------------
    Rule(
        930100,
        "traversal",
        CRITICAL,
        r"\.{2,}[\\/;]+\.{2,}(?:[\\/;]|$)",
        "two or more ../ segments",
    ),
    Rule(
        930105,
        "traversal",
        CRITICAL,
        r"(?:^|[\\/])\.\.(?:[\\/;]|$)",
        "../ in the path",
        frozenset({"path"}),
    ),
    Rule(930110, "traversal", WARNING, r"(?:^|[\\/=\s'\"])\.\.[\\/]", "a ../ segment"),
    Rule(
        930120,
        "traversal",
        CRITICAL,
        r"(?:^|[\\/=\s'\"(:])(?:etc[\\/](?:passwd|shadow|group|hosts|issue|crontab|sudoers|"
        r"master\.passwd|security|motd|profile|environment)|proc[\\/](?:self|\d+)[\\/]|"
        r"windows[\\/](?:system32|win\.ini|system\.ini)|(?:boot|win|system)\.ini\b|"
        r"\.htaccess|\.htpasswd|\.ssh[\\/]|\.git[\\/](?:config|head)|\.aws[\\/]credentials|"
        r"web\.config|wp-config\.php|id_[rd]sa\b|var[\\/]log[\\/]|inetpub[\\/]wwwroot)",
        "a well-known sensitive file",
    ),
    Rule(
        930130,
        "traversal",
        CRITICAL,
        r"\b(?:php|phar|zip|expect|glob|jar|netdoc|gopher|dict|ldap)://|"
        r"\bphp://(?:filter|input)|\bfile://(?:localhost)?/(?:etc|proc|windows|c:)",
        "a stream wrapper or file:// URL to a system path",
    ),
    # -- remote command execution (932), PHP and template/JNDI injection ---------------
    Rule(
        932100,
        "rce",
        CRITICAL,
        rf"(?:;|&&|\|\||\$\(|^\s*\|)\s*{_CMDS}{_ARGS}",
        "a Unix command after a shell separator",
    ),
    Rule(
        932101,
        "rce",
        CRITICAL,
        rf"[\r\n]\s*{_CMDS}{_ARGS}",
        "a Unix command on a new line",
        _NOT_BODY,
        "decoded",
    ),
    Rule(932102, "rce", CRITICAL, rf"\$\(\s*{_CMDS}\b", "command substitution", ALL_KINDS, "cmd"),
    Rule(932105, "rce", CRITICAL, rf"\|\s*{_STRONG}{_ARGS}", "a Unix command piped"),
    Rule(932110, "rce", WARNING, rf"`\s*{_CMDS}{_ARGS}", "a Unix command in backticks"),
    Rule(
        932115,
        "rce",
        CRITICAL,
        r"\b(?:cmd(?:\.exe)?\s*/[ck]\b|powershell(?:\.exe)?\s+-\w|net\s+(?:user|localgroup)\b|"
        r"certutil\s+-|bitsadmin\s+/|invoke-(?:expression|webrequest)\b|\biex\s*\(|"
        r"wmic\s+\w|reg\s+(?:add|query)\b)",
        "a Windows command",
    ),
    Rule(
        932160,
        "rce",
        CRITICAL,
        r"(?:^|[\s;|&`'\"(=$])/(?:usr/(?:local/)?)?s?bin/(?:(?:ba|z|k|da|c|tc)?sh|nc|ncat|"
        r"netcat|cat|wget|curl|rm|chmod|busybox|python\d?|perl|ruby|php|id|whoami|uname)\b",
        "a shell or network tool by its path",
    ),
    Rule(932170, "rce", CRITICAL, r"\(\s*\)\s*\{\s*[^}]*;\s*\}\s*;", "Shellshock function"),
    Rule(
        932180,
        "rce",
        CRITICAL,
        rf"\$\{{ifs\}}|\$ifs\b|\{{\s*{_CMDS},",
        "shell IFS / brace expansion evasion",
    ),
    Rule(
        932200,
        "rce",
        CRITICAL,
        r"\$\{\s*(?:jndi|env|sys|java|lower|upper|date|::-)[^}]*[:}]",
        "JNDI / Log4Shell lookup",
    ),
    Rule(933100, "rce", CRITICAL, r"<\?(?:php|=)|\?>\s*$", "PHP open tag"),
    Rule(
        933150,
        "rce",
        CRITICAL,
        r"(?<![\w.])(?:system|passthru|shell_exec|proc_open|popen|pcntl_exec|"
        r"assert|create_function|call_user_func)\s*\(\s*['\"$]|"
        r"\b(?:base64_decode|str_rot13|gzinflate)\s*\(.{0,60}\)\s*\)",
        "PHP code execution function",
    ),
    Rule(
        933160,
        "rce",
        WARNING,
        r"(?<![\w.])(?:exec|eval|__import__)\s*\(|\bos\.(?:system|popen)\s*\(|"
        r"\bsubprocess\.\w+\s*\(|runtime\.getruntime\(\)|processbuilder\s*\(",
        "code execution call (common in code snippets too)",
    ),
    Rule(
        934100,
        "rce",
        CRITICAL,
        r"\{\{.{0,40}(?:constructor|__class__|__globals__|__builtins__|__subclasses__|"
        r"config\.items|self\._|request\.application).{0,80}\}\}|"
        r"\{\{\s*\d+\s*\*\s*\d+\s*\}\}|\$\{\s*\d+\s*\*\s*\d+\s*\}|#\{\s*\d+\s*\*\s*\d+\s*\}",
        "server-side template injection",
    ),
    # -- cross-site scripting (941) --------------------------------------------------------
    Rule(941110, "xss", CRITICAL, r"<\s*/?\s*script\b", "a script tag"),
    Rule(
        941120,
        "xss",
        CRITICAL,
        r"(?<![\w.$])on(?:abort|activate|afterprint|animation(?:start|end|iteration)|"
        r"auxclick|before\w+|begin|blur|canplay\w*|change|click|contextmenu|copy|cut|"
        r"dblclick|drag\w*|drop|durationchange|end|ended|error|finish|focus\w*|hashchange|"
        r"input|invalid|key(?:down|press|up)|load\w*|message|mouse\w+|paste|pause|play\w*|"
        r"pointer\w+|popstate|progress|readystatechange|repeat|reset|resize|scroll\w*|"
        r"search|seek\w*|select\w*|show|start|storage|submit|toggle|touch\w+|"
        r"transition\w+|unload|wheel|zoom)\s*=",
        "an event-handler attribute",
    ),
    Rule(
        941121,
        "xss",
        CRITICAL,
        r"<[a-z][\w:-]*[\s/][^>]*?(?<![\w.$-])on[a-z]{3,}\s*=",
        "an on* attribute inside a tag",
    ),
    Rule(
        941170,
        "xss",
        CRITICAL,
        r"(?:java|vb|live)script\s*:\s*(?:[\w$.]+\s*[(`=]|/|\[|['\"]|void\b|\()|"
        r"data\s*:\s*(?:text/html|application/(?:x-)?javascript|image/svg\+xml)",
        "a javascript: or data:text/html URI",
    ),
    Rule(
        941180,
        "xss",
        CRITICAL,
        r"<\s*(?:iframe|frame|frameset|object|embed|applet|base|meta|isindex|marquee|"
        r"xss|svg|math|template|portal)\b",
        "an active-content tag",
    ),
    Rule(
        941190,
        "xss",
        CRITICAL,
        r"\bdocument\s*\.\s*(?:cookie|domain|write(?:ln)?)\b|"
        r"\bwindow\s*\.\s*(?:location|name)\s*=|\.innerhtml\s*=|"
        r"\bstring\.fromcharcode\s*\(|\bconstructor\s*\.\s*constructor\s*\(|"
        r"\bexpression\s*\(|-moz-binding|\bbehavior\s*:\s*url|\bsrcdoc\s*=|"
        r"\bformaction\s*=|xlink:href\s*=",
        "a DOM or CSS script sink",
    ),
    Rule(941200, "xss", WARNING, r"['\"]\s*/?>\s*<\s*[a-z!/]", "an attribute break into a tag"),
    Rule(
        941210,
        "xss",
        WARNING,
        r"(?<![\w.$])(?:alert|prompt|confirm|eval|settimeout|setinterval|atob|fetch)\s*"
        r"(?:\(|`)",
        "a JavaScript call (common in code snippets too)",
    ),
    Rule(
        941220,
        "xss",
        WARNING,
        r"<\s*(?:img|video|audio|body|input|form|link|style|details|"
        r"a|div|image|source|table|td|button|select|textarea|keygen)\b[^>]*\b"
        r"(?:src|href|action|background|dynsrc|lowsrc|style)\s*=",
        "an HTML tag with a URL or style attribute",
    ),
    # -- SQL injection (942) ---------------------------------------------------------------
    Rule(
        942100,
        "sqli",
        CRITICAL,
        rf"(?:{_SQL_QUOTE}|\d|\))\s*\)*\s*(?:or|and|xor)\b\s*\(*\s*(?:"
        rf"{_SQL_QUOTE}?[\w.@]*{_SQL_QUOTE}?\s*(?:=(?!=)|<>|<=>|\blike\b|\bregexp\b|"
        rf"\bis\s+(?:not\s+)?null\b)\s*\(*\s*{_SQL_QUOTE}?[\w.@]*|"
        rf"\d+\s*(?:--(?:\s|$)|#\s*$))|"
        rf"{_SQL_QUOTE}\s*\)*\s*(?:or|and)\s+(?:true|false|\d+\s*$|{_SQL_QUOTE}\s*$)",
        "a boolean tautology after a quote or number",
    ),
    Rule(
        942140,
        "sqli",
        CRITICAL,
        r"\b(?:information_schema|pg_catalog|pg_sleep|sysobjects|syscolumns|sysusers|"
        r"mysql\.(?:user|db)|sqlite_master|xp_cmdshell|sp_executesql|sp_oacreate|"
        r"dbms_pipe|dbms_lock|utl_(?:http|inaddr)|waitfor\s+delay|benchmark\s*\(\s*\d|"
        r"load_file\s*\(|into\s+(?:out|dump)file|extractvalue\s*\(|updatexml\s*\(|"
        r"@@(?:version|datadir|hostname|basedir|servername)|"
        r"(?:and|or|select|;|['\"(])\s*\(?\s*sleep\s*\(\s*\d)",
        "a database catalogue, time-delay or file function",
    ),
    Rule(
        942190,
        "sqli",
        CRITICAL,
        r"\bunion\b(?:\s+(?:all|distinct))?\s*\(*\s*select\b",
        "UNION SELECT",
    ),
    Rule(
        942200,
        "sqli",
        CRITICAL,
        r";\s*(?:drop\s+(?:table|database|user)|delete\s+from|insert\s+into|"
        r"update\s+[\w.`\"]+\s+set|truncate\s+table|alter\s+(?:table|user)|"
        r"create\s+(?:table|user|function)|exec(?:ute)?\s+(?:xp_|sp_|master\.|\()|"
        r"declare\s+@|shutdown\b|select\s+(?:\*|@@|[\w.]+\s*(?:\(|,|from\b)))",
        "a stacked query",
    ),
    Rule(
        942440,
        "sqli",
        CRITICAL,
        rf"{_SQL_QUOTE}\s*\)*\s*(?:--[\s+-]*|#\s*|/\*.*)$",
        "a quote closed by a comment: the rest of the query cut off",
    ),
    Rule(
        942110,
        "sqli",
        NOTICE,
        r"\bselect\b[^;]{0,100}?\bfrom\b\s*[\w.`\"\[(]+",
        "SELECT ... FROM (prose says it too)",
    ),
    Rule(
        942121,
        "sqli",
        NOTICE,
        r"\b(?:insert\s+into|delete\s+from|update\s+\w+\s+set)\b",
        "a SQL statement shape (prose says it too)",
    ),
    Rule(
        942120,
        "sqli",
        WARNING,
        r"\b(?:drop\s+(?:table|database)|"
        r"order\s+by\s+\d+\b|group\s+by\s+\d+\b|having\s+\d|"
        r"(?:and|or)\s+\d+\s*(?:=|<|>)\s*\d+)",
        "a SQL statement or clause shape",
    ),
    Rule(
        942150,
        "sqli",
        NOTICE,
        r"(?<![\w.])(?:concat(?:_ws)?|char|chr|ascii|substring|substr|mid|hex|unhex|"
        r"cast|convert|group_concat|version|database|current_user|system_user|"
        r"user|schema|count|ord|length)\s*\(",
        "a SQL function call",
    ),
    Rule(
        942260,
        "sqli",
        WARNING,
        rf"{_SQL_QUOTE}(?:\s*\)+\s*|\s+)(?:(?:or|and|union|select|order\s+by|group\s+by|"
        rf"having|into|where|limit|procedure|waitfor)\b|\|\||&&)",
        "a quote followed by a SQL keyword",
    ),
)

RULES_BY_ID: dict[int, Rule] = {r.id: r for r in RULES}
assert len(RULES_BY_ID) == len(RULES), "duplicate rule id"
