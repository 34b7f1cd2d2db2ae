"""The access log writer: sampling, whole lines, a full queue dropped and counted,
reopening after rotation, and its config section. Real files and pipes, a real thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config.accesslog_model import AccessLog as AccessLogConfig
from gateway.config.load import load_config
from gateway.errors import ConfigErrors
from gateway.observability.accesslog import STATS, AccessLog, cache_outcome, rfc3339
from tests.support import write_config


def record(log: AccessLog, status: int = 200, **fields: Any) -> None:
    args: dict[str, Any] = {
        "request_id": "r1",
        "client": "192.0.2.1",
        "method": "GET",
        "path": "/p",
        "query": "token=secret",
        "status": status,
        "bytes_in": 0,
        "bytes_out": 5,
        "seconds": 0.0015,
        "route": "r",
        "state": None,
        "region": None,
        "cache": None,
    }
    log.record(**{**args, **fields})


def lines_of(path: Path, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The file's lines once it holds `n` (the writer thread drains every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = path.read_bytes() if path.exists() else b""
        if data.count(b"\n") >= n:
            assert data.endswith(b"\n")  # whole lines only
            return [orjson.loads(line) for line in data.splitlines()]
        assert time.monotonic() < deadline, f"{len(data.splitlines())} lines of {n}"
        time.sleep(0.02)


@pytest.fixture
def opened() -> Iterator[list[AccessLog]]:
    logs: list[AccessLog] = []
    yield logs
    for log in logs:
        log.close()


def make(opened: list[AccessLog], **cfg: Any) -> AccessLog:
    log = AccessLog(AccessLogConfig(**cfg))
    opened.append(log)
    return log


def test_full_mode_fields(tmp_path: Path, opened: list[AccessLog]) -> None:
    out = tmp_path / "a.log"
    log = make(opened, mode="full", output=str(out))
    record(log)
    [line] = lines_of(out, 1)
    assert line["path"] == "/p"  # the query is not logged by default
    assert line["duration_ms"] == 1.5
    assert line["upstream"] is None and line["cache"] is None  # present, null
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-01-01T00:00:00.000Z")


def test_include_query(tmp_path: Path, opened: list[AccessLog]) -> None:
    out = tmp_path / "a.log"
    log = make(opened, mode="full", output=str(out), include_query=True)
    record(log)
    assert lines_of(out, 1)[0]["path"] == "/p?token=secret"


def test_sampled_mode_keeps_errors(tmp_path: Path, opened: list[AccessLog]) -> None:
    out = tmp_path / "a.log"
    log = make(opened, mode="sampled", sample_rate=0.1, output=str(out))
    for i in range(2000):
        record(log, request_id=f"ok-{i}")
    for i in range(50):
        record(log, status=503, request_id=f"err-{i}")
    log.close()
    lines = lines_of(out, 50)
    errors = [x for x in lines if x["status"] == 503]
    sampled = len(lines) - len(errors)
    assert len(errors) == 50  # always_log_errors
    assert 100 <= sampled <= 320  # ~200 of 2000 at 0.1 (binomial, > 7 sigma either side)


def test_off_is_none() -> None:
    assert AccessLog.open(AccessLogConfig()) is None
    assert AccessLogConfig().mode == "off"


def test_full_queue_drops_and_counts(tmp_path: Path, opened: list[AccessLog]) -> None:
    """A pipe nobody reads: the writer blocks in write(), the queue fills, lines are
    dropped and counted, and the event loop's side never waits. Read afterwards, the
    pipe holds whole lines only (writes of at most PIPE_BUF bytes, cut at line ends)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = make(opened, mode="full", output=str(fifo), max_queued_lines=100)
        assert not log.regular
        dropped = STATS.dropped
        started = time.perf_counter()
        for i in range(20_000):  # ~4 MB: far past the pipe's buffer and the queue
            record(log, request_id=f"r{i}", path="/" + "x" * 100)
        assert time.perf_counter() - started < 5  # never blocked on the pipe
        assert STATS.dropped - dropped > 10_000
        chunks = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = os.read(reader, 1 << 16)
            except BlockingIOError:
                if not log._queue and chunks:
                    break
                time.sleep(0.05)
                continue
            chunks.append(data)
        text = b"".join(chunks)
        assert text.endswith(b"\n")
        ids = [orjson.loads(line)["request_id"] for line in text.splitlines()]
        assert len(ids) == len(set(ids)) > 0
    finally:
        os.close(reader)


@pytest.mark.parametrize("path_bytes", [10, 1000, 5000], ids=["short", "1k", "over-pipe-buf"])
def test_pipe_gets_whole_lines(tmp_path: Path, opened: list[AccessLog], path_bytes: int) -> None:
    """Short lines and lines longer than PIPE_BUF mixed, through a pipe: every line
    arrives whole and in order (writes cut at line ends)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = make(opened, mode="full", output=str(fifo))
        ids = [f"r{i}" for i in range(12)]  # ~40 KB at most: within the pipe's buffer
        for i, rid in enumerate(ids):
            record(log, request_id=rid, path="/" + "x" * (path_bytes if i % 3 else 5))
        log.close()
        text = b""
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            text += chunk
        assert [orjson.loads(line)["request_id"] for line in text.splitlines()] == ids
    finally:
        os.close(reader)


def test_reopen_after_rotation(tmp_path: Path, opened: list[AccessLog]) -> None:
    out = tmp_path / "a.log"
    log = make(opened, mode="full", output=str(out))
    record(log, request_id="before")
    lines_of(out, 1)
    out.rename(tmp_path / "a.log.1")  # logrotate moves the file away
    log.reopen()
    deadline = time.monotonic() + 5
    while not out.exists():  # the writer reopens at its next wake-up
        assert time.monotonic() < deadline
        time.sleep(0.02)
    record(log, request_id="after")
    assert [x["request_id"] for x in lines_of(out, 1)] == ["after"]


@pytest.mark.parametrize(("header", "outcome"), [
    ("gateway; hit; ttl=30", "hit"),
    ("gateway; hit; ttl=-2; detail=stale-while-revalidate", "stale"),
    ("gateway; fwd=miss; fwd-status=200; stored", "miss"),
    ("gateway; fwd=vary-miss; fwd-status=200", "miss"),
    ("gateway; fwd=stale; fwd-status=304", "revalidated"),
    ("gateway; fwd=stale; fwd-status=503; detail=stale-if-error", "stale"),
    ("gateway; fwd=method", "bypass"),
    ("gateway; fwd=request", "bypass"),
])  # fmt: skip
def test_cache_outcome(header: str, outcome: str) -> None:
    assert cache_outcome(header) == outcome


def test_rfc3339() -> None:
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"


BASE = {
    "listeners": [{"address": "127.0.0.1:0"}],
    "upstreams": {"u": {"endpoints": ["http://127.0.0.1:1"]}},
    "routes": [{"name": "r", "upstream": "u"}],
}


@pytest.mark.parametrize(("section", "error"), [
    ({"mode": "on"}, "access_log.mode"),
    ({"mode": "sampled", "sample_rate": 0}, "access_log.sample_rate"),
    ({"mode": "full", "sample_rate": 1.5}, "access_log.sample_rate"),
    ({"mode": "full", "output": " "}, "access_log.output"),
    ({"mode": "full", "max_queued_lines": 0}, "access_log.max_queued_lines"),
    ({"mode": "full", "colour": True}, "access_log.colour"),
])  # fmt: skip
def test_config_errors(tmp_path: Path, section: dict[str, Any], error: str) -> None:
    path = tmp_path / "g.yaml"
    write_config(path, {**BASE, "access_log": section})
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert any(e.path == error for e in info.value.errors), str(info.value)


def test_unwritable_output_is_a_config_error(tmp_path: Path) -> None:
    cfg = AccessLogConfig(mode="full", output=str(tmp_path / "missing" / "a.log"))
    with pytest.raises(ConfigErrors) as info:
        AccessLog.open(cfg)
    assert info.value.errors[0].path == "access_log.output"
