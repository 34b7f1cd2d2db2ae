"""Command line: `gateway run CONFIG`, `gateway check CONFIG`, `gateway schema`,
`gateway rollout status|pause|resume|promote|abort [NAME]` (through the admin API)."""

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

    ro = sub.add_parser("rollout", help="show or steer rollouts through the admin API")
    ro.add_argument("action", choices=["status", "pause", "resume", "promote", "abort"])
    ro.add_argument("name", nargs="?", help="the service (all rollouts for status without it)")
    ro.add_argument(
        "--admin", default=None, help="admin address host:port (default 127.0.0.1:9901)"
    )
    ro.add_argument("--config", default=None, help="take the admin address from this config")

    args = parser.parse_args(argv)
    if args.command == "rollout":
        return rollout_command(args.action, args.name, args.admin, args.config)
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


def rollout_command(action: str, name: str | None, admin: str | None, config: str | None) -> int:
    """Call the admin API; print its JSON answer. Exit 0 on 200, 1 otherwise."""
    import json
    import urllib.error
    import urllib.request

    if admin is None and config is not None:
        from gateway.config.load import load_config

        admin = load_config(config).admin.address
    base = f"http://{admin or '127.0.0.1:9901'}/rollouts"
    if action != "status" and not name:
        print(f"gateway rollout {action}: NAME is required", file=sys.stderr)
        return 2
    url = f"{base}/{name}" if name else base
    req = urllib.request.Request(url, method="GET")
    if action != "status":
        req = urllib.request.Request(f"{url}/{action}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body, code = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read(), exc.code
    except OSError as exc:
        print(f"cannot reach the admin API at {url}: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(body), indent=2))
    except ValueError:
        print(body.decode(errors="replace"))
    return 0 if code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
