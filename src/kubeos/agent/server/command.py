"""``os-agent serve``: run the boot check, then serve JSON-RPC on the agent socket.

The boot check runs before the socket opens, so the proxy never talks to an agent that has not
yet decided whether this boot is a trial. SIGTERM (systemd stop) closes the socket cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from kubeos.agent.boot.dirslots import LAYOUT_PARTITIONS, LAYOUTS
from kubeos.agent.errors import AgentError
from kubeos.agent.hostpaths import GRUBENV, HostPaths
from kubeos.agent.rpc.server import RpcServer
from kubeos.agent.service import AgentService


def _host_options(parser: argparse.ArgumentParser) -> None:
    """Where the host's files and devices are; ``--root`` is for sandboxes and tests."""
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="directory all host files are mapped under (default: /)")
    parser.add_argument("--grubenv", default=GRUBENV,
                        help=f"grubenv path relative to the root (default: {GRUBENV})")
    parser.add_argument("--sysfs", type=Path, default=Path("/sys"), help=argparse.SUPPRESS)
    parser.add_argument("--devfs", type=Path, default=Path("/dev"), help=argparse.SUPPRESS)
    parser.add_argument("--mountinfo", type=Path, default=Path("/proc/self/mountinfo"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUT_PARTITIONS,
                        help="slot layout: GPT partitions found through sysfs (default), or "
                        "directories <root>/sim-disk/ROOT-A|B (the fleet simulator)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` and ``boot-check`` on the ``os-agent`` subcommand parser."""
    serve = subparsers.add_parser(
        "serve",
        help="run the agent daemon (JSON-RPC on a unix socket)",
        description="Run the boot check, then serve the agent's JSON-RPC methods.",
    )
    _host_options(serve)
    serve.add_argument("--socket", type=Path, default=None,
                       help="socket path (default: <root>/run/os-agent/os-agent.sock)")
    serve.add_argument("--commit-window", type=float, default=900.0, metavar="SECONDS",
                       help="how long a trial boot waits for commit before falling back "
                       "(default: 900)")
    serve.add_argument("--persist-dir", action="append", default=[], metavar="DIR",
                       help="also let kernel.sysctl.persist write *.conf files under this "
                       "absolute directory (repeatable; default: /etc only)")
    serve.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="drop a connection idle for this long (default: 30)")
    serve.set_defaults(func=run_serve)

    check = subparsers.add_parser(
        "boot-check",
        help="run the boot check once (for the boot-check timer)",
        description="Record a failed trial boot; with --expire, also end an uncommitted trial "
        "of the booted slot and reboot into the committed one.",
    )
    _host_options(check)
    check.add_argument("--expire", action="store_true",
                       help="end an uncommitted trial of the booted slot (reboots)")
    check.set_defaults(func=run_boot_check)


def _paths(args: argparse.Namespace) -> HostPaths:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return HostPaths(
        root=args.root,
        sysfs=args.sysfs,
        devfs=args.devfs,
        mountinfo=args.mountinfo,
        grubenv_path=args.grubenv,
    )


def run_boot_check(args: argparse.Namespace) -> int:
    service = AgentService(_paths(args), reboot_delay=0.0, layout=args.layout)
    try:
        service.start()
        if args.expire and service.expire_trial():
            service.wait_for_reboot()
    except AgentError as exc:
        logging.getLogger("os-agent").error("%s", exc)
        return 1
    finally:
        service.close()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    paths = _paths(args)
    for directory in args.persist_dir:
        if not directory.startswith("/") or ".." in directory.split("/"):
            logging.getLogger("os-agent").error("--persist-dir %r: not an absolute path", directory)
            return 2
    service = AgentService(paths, commit_window=args.commit_window, layout=args.layout,
                           persist_dirs=tuple(args.persist_dir))
    try:
        service.start()
        asyncio.run(_serve(service, args.socket or paths.socket, args.read_timeout))
    except AgentError as exc:
        logging.getLogger("os-agent").error("%s", exc)
        return 1
    finally:
        service.close()
    return 0


async def _serve(service: AgentService, socket_path: Path, read_timeout: float) -> None:
    server = RpcServer(service.rpc_methods(), socket_path, read_timeout=read_timeout)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
