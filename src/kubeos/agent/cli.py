"""``os-agent``: the node agent's command line. Each subcommand registers itself."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import kubeos
from kubeos.agent.server import command as serve_command
from kubeos.agent.settings import command as settings_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="os-agent", description="KubeOS node agent")
    parser.add_argument("--version", action="version", version=f"%(prog)s {kubeos.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    settings_command.add_parser(subparsers)
    serve_command.add_parser(subparsers)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
