"""``kbimg create -f kbimg.toml vm-img|pxe-img|upgrade-img|admin-container [--output DIR]``.

Same command line as the reference (``-d/--debug``, ``-f/--file``), plus ``--output`` (default
``./scripts-auto`` as the reference, but earlier artifacts there are kept). Errors are one line
naming the table and key, exit status 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

import kubeos
from kubeos.kbimg import build as builder
from kubeos.kbimg import config, release
from kubeos.kbimg.errors import KbimgError

_err = Console(stderr=True, log_path=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(kubeos.__version__, "-V", "--version", prog_name="kbimg")
@click.option("-d", "--debug", is_flag=True, help="Show tracebacks of failures.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Build KubeOS images: VM disk, PXE, upgrade image, admin container."""
    ctx.obj = {"debug": debug}


@main.command()
@click.option("-f", "--file", "file", required=True, type=click.Path(path_type=Path),
              help="kbimg.toml")
@click.option("-o", "--output", default=Path("scripts-auto"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Artifact directory.")
@click.argument("kind", type=click.Choice(config.IMAGE_KINDS))
@click.pass_context
def create(ctx: click.Context, file: Path, output: Path, kind: config.ImageKind) -> None:
    """Create an image of KIND from the kbimg.toml FILE."""
    started = time.monotonic()
    try:
        cfg = config.load(file)
        for warning in cfg.warnings:
            _err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
        with _err.status("starting", spinner="dots") as status:

            def step(text: str) -> None:
                elapsed = time.monotonic() - started
                _err.log(f"{text}  [dim]({elapsed:.1f}s)[/]")
                status.update(text)

            artifacts = builder.build(cfg, kind, output, step)
    except KbimgError as exc:
        if ctx.obj.get("debug"):
            _err.print_exception()
        _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    total = time.monotonic() - started
    for path in artifacts:
        click.echo(str(path))
    _err.print(f"[green]done[/] {kind} in {total:.1f}s")


@main.command("release")
@click.option("-o", "--output", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Artifact directory.")
@click.option("-t", "--tag", default=None, help="Image tag (default: the package version).")
@click.option("--repository", default="kubeos", show_default=True,
              help="Image name prefix: REPOSITORY/os-operator:TAG and so on.")
@click.option("--image", "images", multiple=True, type=click.Choice(release.IMAGES),
              help="Build only these images (repeatable; default: all).")
@click.pass_context
def release_cmd(ctx: click.Context, output: Path, tag: str | None, repository: str,
                images: tuple[str, ...]) -> None:
    """Build the release into OUTPUT: wheels, os-operator, os-proxy and admin-container images.
    Needs root (mmdebstrap); no Docker daemon."""
    started = time.monotonic()
    try:
        with _err.status("starting", spinner="dots") as status:

            def step(text: str) -> None:
                _err.log(f"{escape(text)}  [dim]({time.monotonic() - started:.1f}s)[/]")
                status.update(escape(text))

            result = release.build_release(output, tag=tag, repository=repository,
                                           images=images or release.IMAGES, step=step)
    except KbimgError as exc:
        if ctx.obj.get("debug"):
            _err.print_exception()
        _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    for path in result.artifacts:
        click.echo(str(path))
    for name, facts in result.images.items():
        size = int(str(facts["bytes"])) / 2**20
        _err.print(f"{name}: {facts['ref']}  {size:.1f} MiB")
    _err.print(f"[green]done[/] release in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
