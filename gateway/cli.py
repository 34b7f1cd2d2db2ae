"""Command line: `gateway run CONFIG`, `gateway check CONFIG`, `gateway schema`."""

from __future__ import annotations

import argparse
import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve traffic with a config file")
    run.add_argument("config", help="YAML or TOML config file")
    run.add_argument("--workers", type=int, default=None, help="worker processes (default: config)")
    run.add_argument(
        "--demo",
        action="store_true",
        help="also start demo upstream servers on the config's loopback endpoints",
    )
    run.add_argument("--log-level", default="info")

    check = sub.add_parser("check", help="validate a config file, print every error")
    check.add_argument("config")

    sub.add_parser("schema", help="print the config's JSON Schema")

    cert = sub.add_parser("cert", help="certificate tools")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    dev = cert_sub.add_parser("dev", help="write a local CA, a server and a client certificate")
    dev.add_argument("directory")
    dev.add_argument("--name", action="append", help="server name (repeatable)")

    args = parser.parse_args(argv)
    if args.command == "check":
        from gateway.config.load import check_command

        return check_command(args.config)
    if args.command == "cert":
        from gateway.tls.dev import cert_dev_command

        return cert_dev_command(args.directory, args.name)
    if args.command == "schema":
        import orjson

        from gateway.config.schema import json_schema

        sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    setup_logging(args.log_level)
    from gateway.supervisor import run as run_gateway

    return run_gateway(args.config, workers=args.workers, demo=args.demo, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
