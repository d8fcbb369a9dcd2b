"""``os-agent config apply``: run the settings engine on a request file, for people and tests.

The CLI never restarts services: it prints which ones need a restart. ``--root`` maps every
path under a directory so the engine can be tried on a copy of a node's files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kubeos.agent.settings.engine import apply_settings
from kubeos.agent.settings.errors import SettingsError
from kubeos.agent.settings.model import Slot
from kubeos.agent.settings.request import parse_request
from kubeos.agent.settings.result import ApplyResult

GRUBENV = Path("boot/efi/EFI/openEuler/grubenv")


def add_parser(subparsers: Any) -> None:
    """Register ``config apply`` on the ``os-agent`` subcommand parser."""
    config = subparsers.add_parser("config", help="node settings (sysconfigs)")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    apply = actions.add_parser(
        "apply",
        help="apply a sysconfigs request",
        description="Apply a request in the OS CR 'sysconfigs' format (YAML or JSON; a whole "
        "OS CR or a configure RPC request also works). Nothing is written if any part fails.",
    )
    apply.add_argument("file", metavar="FILE", help="request file, or - for stdin")
    apply.add_argument("--root", type=Path, default=Path("/"),
                       help="directory every node path is mapped under (default: /)")
    apply.add_argument("--dry-run", action="store_true", help="change nothing, report only")
    apply.add_argument("--diff", action="store_true", help="print a unified diff of each file")
    apply.add_argument("--booted-slot", choices=("A", "B"),
                       help="slot the node booted from (default: saved_entry in grubenv, or A)")
    apply.add_argument("--json", action="store_true", help="print the result as JSON")
    apply.set_defaults(func=run_apply)


def run_apply(args: argparse.Namespace) -> int:
    try:
        request = parse_request(_load(args.file))
        slot: Slot = args.booted_slot or booted_slot_from_grubenv(args.root)
        result = apply_settings(request.configs, root=args.root, booted_slot=slot,
                                dry_run=args.dry_run)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, YAMLError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _report(result, diff=args.diff)
    return 0


def booted_slot_from_grubenv(root: Path) -> Slot:
    """``saved_entry`` from the ESP's grubenv; A when absent or unreadable (GRUB's default)."""
    try:
        text = (root / GRUBENV).read_text(errors="replace")
    except OSError:
        return "A"
    for line in text.splitlines():
        if line.startswith("saved_entry="):
            return "B" if line.removeprefix("saved_entry=").strip() == "B" else "A"
    return "A"


def _load(file: str) -> object:
    text = sys.stdin.read() if file == "-" else Path(file).read_text()
    if file.endswith(".json") or text.lstrip().startswith("{"):
        return json.loads(text)
    return YAML(typ="safe", pure=True).load(text)


def _report(result: ApplyResult, *, diff: bool) -> None:
    verb = "changed" if result.applied else "would change"
    for config in result.configs:
        files = ", ".join(str(f.path) for f in config.files if f.changed)
        if config.changed:
            print(f"{config.model}: {verb} {files} ({config.effect})")
        else:
            print(f"{config.model}: unchanged")
        if diff:
            sys.stdout.write(config.diff())
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    for service in result.restarts:
        print(f"restart needed: {service}")
