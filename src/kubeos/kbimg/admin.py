"""admin-container: the image of deploy/admin-container/Containerfile, built without a daemon.

The Containerfile is read as data (a subset: ARG, FROM a Debian image, RUN, COPY, ENV, EXPOSE,
ENTRYPOINT, CMD, LABEL). The Debian base is made with mmdebstrap (with the packages that the
RUN lines ``apt-get install`` already included), RUN lines are executed as ``docker build``
does (``/bin/sh -c`` of the Containerfile's own text, inside the image, in the sandbox of
sandbox.py), COPY takes files from the context directory, except ``hostshell`` which comes from
``[admin_container].hostshell`` as in the reference. Values from kbimg.toml never reach a RUN
line. The result is written with the OCI writer as ``admin-container.tar``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import kubeos
from kubeos.kbimg import oci
from kubeos.kbimg.commands import require, run
from kubeos.kbimg.config import AdminContainer
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.inroot import copy_into, resolve
from kubeos.kbimg.rootfs import DEBIAN_MIRROR
from kubeos.kbimg.sandbox import run_sandboxed

ARTIFACT = "admin-container.tar"
_DEBIAN_FROM = re.compile(r"^(docker\.io/)?(library/)?debian:([a-z]+)(-slim)?$")


@dataclass
class Containerfile:
    """The parts of a Containerfile kbimg can build."""

    suite: str
    steps: list[tuple[str, str]] = field(default_factory=list)  # ("RUN"|"COPY", argument)
    packages: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    labels: dict[str, str] = field(default_factory=dict)


def context_dir() -> Path:
    """deploy/admin-container of the current directory, else of the source checkout."""
    for base in (Path.cwd(), Path(kubeos.__file__).resolve().parents[2]):
        candidate = base / "deploy" / "admin-container"
        if (candidate / "Containerfile").is_file():
            return candidate
    raise BuildError("admin-container is not built here: deploy/admin-container/Containerfile "
                     "not found (run kbimg from the source checkout, or use docker/podman build)")


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current)
    return lines


def _json_or_shell(arg: str) -> list[str]:
    if arg.startswith("["):
        value = json.loads(arg)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BuildError(f"Containerfile: {arg!r} is not a JSON array of strings")
        return value
    return ["/bin/sh", "-c", arg]


def _apt_packages(command: str) -> list[str]:
    words = shlex.split(command)
    out: list[str] = []
    for i, word in enumerate(words):
        if word == "install" and i > 0 and words[i - 1] in ("apt-get", "apt"):
            for arg in words[i + 1:]:
                if arg in ("&&", ";", "||", "|"):
                    break
                if not arg.startswith("-"):
                    out.append(arg)
    return out


def parse(text: str) -> Containerfile:
    args: dict[str, str] = {}
    result: Containerfile | None = None
    for line in _logical_lines(text):
        word, _, arg = line.partition(" ")
        instr, arg = word.upper(), arg.strip()
        if instr == "ARG":
            name, _, default = arg.partition("=")
            args[name] = default
            continue
        if instr == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), arg)
            match = _DEBIAN_FROM.match(image.split()[0])
            if match is None:
                raise BuildError(f"Containerfile: base {image!r} is not a Debian image; "
                                 "only Debian bases are built here")
            result = Containerfile(suite=match[3])
            continue
        if result is None:
            raise BuildError(f"Containerfile: {instr} before FROM")
        if instr == "RUN":
            result.steps.append(("RUN", arg))
            result.packages += _apt_packages(arg)
        elif instr == "COPY":
            result.steps.append(("COPY", arg))
        elif instr == "ENV":
            key, _, value = arg.replace("=", " ", 1).partition(" ")
            result.env.append(f"{key}={value.strip()}")
        elif instr == "EXPOSE":
            result.exposed += [p if "/" in p else f"{p}/tcp" for p in arg.split()]
        elif instr == "ENTRYPOINT":
            result.entrypoint = _json_or_shell(arg)
        elif instr == "CMD":
            result.cmd = _json_or_shell(arg)
        elif instr == "LABEL":
            for item in shlex.split(arg):
                key, _, value = item.partition("=")
                result.labels[key] = value
        elif instr not in ("WORKDIR", "USER", "SHELL", "STOPSIGNAL", "HEALTHCHECK"):
            raise BuildError(f"Containerfile: instruction {instr} is not supported here")
    if result is None:
        raise BuildError("Containerfile: no FROM")
    return result


def _copy(spec: str, context: Path, root: Path, hostshell: Path) -> None:
    parts = _json_or_shell(spec) if spec.startswith("[") else shlex.split(spec)
    if any(p.startswith("--") for p in parts):
        raise BuildError(f"Containerfile: COPY options are not supported: {spec!r}")
    *sources, dest = parts
    into_dir = dest.endswith("/") or len(sources) > 1
    for src in sources:
        host = hostshell if src == "hostshell" else (context / src).resolve()
        if context.resolve() not in host.parents and host != hostshell:
            raise BuildError(f"Containerfile: COPY source {src!r} is outside the context")
        target = f"{dest.rstrip('/')}/{Path(src).name}" if into_dir else dest
        copy_into(root, host, target)


def build_admin(spec: AdminContainer, work: Path, step: Callable[[str], None]) -> str:
    context = context_dir()
    plan = parse((context / "Containerfile").read_text())
    require("mmdebstrap")
    root = work / "admin-root"
    root.mkdir()
    step(f"bootstrapping Debian {plan.suite} for the admin image (mmdebstrap)")
    include = ",".join(dict.fromkeys(["ca-certificates", *plan.packages]))
    run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
         "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", f"--include={include}",
         "--", plan.suite, str(root), DEBIAN_MIRROR])
    resolv = resolve(root, "/etc/resolv.conf", follow_last=False)
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    for kind, arg in plan.steps:
        if kind == "RUN":
            step(f"RUN {arg[:60]}")
            run_sandboxed(root, ["/bin/sh", "-c", arg], chroot=True,
                          env={"DEBIAN_FRONTEND": "noninteractive"})
        else:
            step(f"COPY {arg}")
            _copy(arg, context, root, spec.hostshell)
    resolv.unlink()
    for sub in ("dev", "proc", "sys", "run", "tmp"):
        for entry in (root / sub).iterdir() if (root / sub).is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    step("writing the admin image")
    oci.write_image(work / ARTIFACT, spec.img_name, [oci.Layer(tree=root)],
                    workdir=work / "oci", entrypoint=plan.entrypoint, cmd=plan.cmd,
                    env=plan.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                     "/sbin:/bin"],
                    exposed_ports=plan.exposed, labels=plan.labels)
    return ARTIFACT
