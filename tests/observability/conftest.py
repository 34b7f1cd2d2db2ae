"""One gateway with every feature on, shared by the package's end-to-end tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.observability.support import Stack, ThreadedUpstream, stack_config
from tests.support import ROOT, GatewayProcess, free_port, write_config


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("features")
    log = tmp / "access.log"
    certs = tmp / "certs"
    subprocess.run(
        [sys.executable, "-m", "gateway", "cert", "dev", str(certs)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with ThreadedUpstream() as up:
        port, admin = free_port(), free_port()
        path = tmp / "gateway.yaml"
        write_config(path, stack_config(up.port, free_port(), port, admin, log, certs))
        gw = GatewayProcess(path, port, admin, workers=2)
        try:
            asyncio.run(gw.wait_ready(60))  # two workers starting on a busy machine
            yield Stack(gw, log)
        finally:
            gw.stop()
