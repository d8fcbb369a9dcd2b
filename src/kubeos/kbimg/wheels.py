"""The project as wheels: building them with pip, and unpacking them into an image tree.

Images get the project the way users install it, as its wheel and its dependencies' wheels,
never as a copy of a source checkout (which carries whatever happens to lie in the tree).
Unpacking is done here instead of by ``pip install`` in the image: the image needs no pip, the
console scripts get ``#!/usr/bin/python3`` rather than the build host's interpreter, and the
same wheels always give the same files.
"""

from __future__ import annotations

import atexit
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import kubeos
from kubeos.kbimg.commands import run
from kubeos.kbimg.errors import BuildError

WHEELS_ENV = "KBIMG_WHEELS"  # a directory of wheels (e.g. `kbimg release`'s) to use as is
_built: dict[str, Path] = {}


def normalize(name: str) -> str:
    """PEP 503 name, as wheel file names spell it (``ruamel.yaml`` -> ``ruamel_yaml``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def project_dir() -> Path:
    """The source checkout kbimg runs from: a wheel of the project is built from it."""
    for base in (Path.cwd(), Path(kubeos.__file__).resolve().parents[2]):
        if (base / "pyproject.toml").is_file() and (base / "src/kubeos/__init__.py").is_file():
            return base
    raise BuildError(f"no kubeos source checkout to build a wheel from; set {WHEELS_ENV} to a "
                     "directory of wheels (the wheels/ of `kbimg release`)")


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH if set, else the commit time of the checkout (same commit, same
    timestamps in the images), else None."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    git = shutil.which("git")
    try:
        base = project_dir()
    except BuildError:
        return None
    if git is None or not (base / ".git").exists():
        return None
    proc = subprocess.run([git, "-C", str(base), "log", "-1", "--format=%ct"],
                          capture_output=True, text=True, check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def pinned_constraints(path: Path) -> Path:
    """``name==version`` of every distribution of the running environment: the release gets
    the dependency versions the project was tested with, not whatever is newest today."""
    lines = sorted({f"{normalize(d.metadata['Name'])}=={d.version}"
                    for d in importlib.metadata.distributions()
                    if d.metadata["Name"] and normalize(d.metadata["Name"]) != "kubeos"})
    path.write_text("\n".join(lines) + "\n")
    return path


def pip_wheel(dest: Path, requirements: Iterable[str], *, deps: bool,
              constraints: Path | None = None) -> None:
    """``pip wheel`` of the running interpreter, so binary wheels match its Python version."""
    argv: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--quiet",
                              "--disable-pip-version-check", "--wheel-dir", dest]
    if not deps:
        argv.append("--no-deps")
    if constraints is not None:
        argv += ["--constraint", constraints]
    run([*argv, "--", *requirements])


def find_wheel(directory: Path, dist: str) -> Path:
    """The one wheel of ``dist`` in ``directory``."""
    found = sorted(p for p in directory.glob("*.whl")
                   if normalize(p.name.split("-", 1)[0]) == normalize(dist))
    if len(found) != 1:
        what = "no wheel" if not found else f"{len(found)} wheels"
        raise BuildError(f"{directory}: {what} of {dist} (expected exactly one)")
    return found[0]


def _requires(wheel: Path) -> list[str]:
    """The unconditional dependencies (no extra, no marker) named in the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and ";" not in line:
            out.append(re.split(r"[\s<>=!~\[(]", line.split(":", 1)[1].strip(), maxsplit=1)[0])
    return out


def agent_wheels() -> list[Path]:
    """The agent's wheels: the project's and those of its pure-Python runtime dependencies.

    From ``$KBIMG_WHEELS`` if set; otherwise built once per process from the source checkout,
    the dependencies at the versions installed here (the ones the tests ran with).
    """
    env = os.environ.get(WHEELS_ENV)
    if env:
        directory = Path(env)
    elif "agent" in _built:
        directory = _built["agent"]
    else:
        directory = Path(tempfile.mkdtemp(prefix="kbimg-wheels-"))
        atexit.register(shutil.rmtree, directory, True)
        pip_wheel(directory, [str(project_dir())], deps=False)
        deps = _requires(find_wheel(directory, "kubeos"))
        pip_wheel(directory, [f"{d}=={importlib.metadata.version(d)}" for d in deps], deps=False)
        _built["agent"] = directory
    project = find_wheel(directory, "kubeos")
    return [project, *(find_wheel(directory, d) for d in _requires(project))]


def _safe_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name)
    if path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        raise BuildError(f"wheel member {name!r} is not a plain relative path")
    return path.parts


def unpack_wheel(wheel: Path, site: Path) -> dict[str, str]:
    """Install ``wheel`` into the directory ``site`` (its purelib/platlib contents, modes
    0644/0755); returns its console scripts (name -> ``module:attr``) for launchers to be
    written by the caller. Headers, scripts and data of ``*.data/`` are not installed: none of
    the project's wheels has any that the images need."""
    scripts: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            parts = _safe_parts(info.filename)
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = site.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            executable = (info.external_attr >> 16) & 0o111
            with zf.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(dest, 0o755 if executable else 0o644)
            if parts[0].endswith(".dist-info") and parts[-1] == "entry_points.txt":
                parser = configparser.ConfigParser(delimiters=("=",))
                parser.optionxform = str  # type: ignore[assignment,method-assign]
                parser.read_string(dest.read_text())
                if parser.has_section("console_scripts"):
                    scripts.update(parser.items("console_scripts"))
    return scripts


def launcher(target: str, *, path: str | None = None) -> str:
    """A console script for the entry point ``module:attr`` run by the image's python3;
    ``path`` is put first on sys.path when the packages live outside site-packages."""
    module, _, attr = target.partition(":")
    attr = attr.split("[", 1)[0].strip()
    module = module.strip()
    if not module or not attr:
        raise BuildError(f"entry point {target!r} is not module:attr")
    head = attr.split(".", 1)[0]
    lines = ["#!/usr/bin/python3",
             f"# Console script written by kbimg from the kubeos wheel ({module}:{attr}).",
             "import sys", ""]
    if path is not None:
        lines.append(f"sys.path.insert(0, {path!r})")
    lines += [f"from {module} import {head}", "", f"sys.exit({attr}())", ""]
    return "\n".join(lines)
