"""Property tests over generated files with arbitrary comment and blank-line layouts.

1. Applying a request twice changes nothing the second time. (Lists are excluded: a list value
   is *appended*, as the reference and its user guide define, so it grows on each apply.)
2. Adding a key and then deleting it restores the file byte for byte. (Files end with a
   newline: appending to a file without one has to add it. For YAML and TOML the key's parent
   exists: a table created for the key stays, empty, when the key is deleted, as it would if
   the user had written it.)
3. Editing one key changes no line that does not hold that key.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeos.agent.settings import ConfigRequest

from . import strategies as s
from .support import GRUB_CFG, apply, config, read, write

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def node_with(path: str, text: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, path, text)
        yield root


def check_idempotent(path: str, text: str, request: ConfigRequest) -> None:
    with node_with(path, text) as root:
        apply(root, request)
        once = read(root, path)
        second = apply(root, request)
        assert not second.changed
        assert read(root, path) == once


def check_add_delete(path: str, text: str, add: ConfigRequest, delete: ConfigRequest) -> None:
    with node_with(path, text) as root:
        apply(root, add)
        assert read(root, path) != text
        apply(root, delete)
        assert read(root, path) == text


def untouched(text: str, holds_key: Any) -> list[str]:
    return [line for line in text.splitlines() if not holds_key(line)]


# --- sysctl.persist ----------------------------------------------------------------------------

def sysctl_key(line: str) -> str | None:
    body = line.strip()
    if not body or body[0] in "#;" or "=" not in body:
        return None
    return body.split("=", 1)[0].strip()


@FAST
@given(s.sysctl_files, s.SYSCTL_KEYS, s.VALUE)
def test_sysctl_persist_properties(text: str, key: str, value: str) -> None:
    path = "/etc/sysctl.conf"
    request = config("kernel.sysctl.persist", (key, value))
    check_idempotent(path, text, request)
    check_add_delete(path, text, config("kernel.sysctl.persist", ("new.key", value)),
                     config("kernel.sysctl.persist", ("new.key", value, "delete")))
    with node_with(path, text) as root:
        apply(root, request)
        after = read(root, path)
        assert untouched(after, lambda ln: sysctl_key(ln) == key) == untouched(
            text, lambda ln: sysctl_key(ln) == key)


# --- pam.limits --------------------------------------------------------------------------------

def limits_domain(line: str) -> str | None:
    body = line.strip()
    return None if not body or body.startswith("#") else body.split()[0]


@FAST
@given(s.limits_files, s.DOMAINS, s.LIMIT)
def test_pam_limits_properties(text: str, domain: str, limit: tuple[str, str, str]) -> None:
    path = "/etc/security/limits.conf"
    request = config("pam.limits", (domain, ".".join(limit)))
    check_idempotent(path, text, request)
    check_add_delete(path, text, config("pam.limits", ("newuser", "soft.core.0")),
                     config("pam.limits", ("newuser", "soft.core.0", "delete")))
    with node_with(path, text) as root:
        apply(root, request)
        after = read(root, path)
        assert untouched(after, lambda ln: limits_domain(ln) == domain) == untouched(
            text, lambda ln: limits_domain(ln) == domain)


# --- grub.cmdline ------------------------------------------------------------------------------

@FAST
@given(s.grub_files(), st.sampled_from(["A", "B"]), st.sampled_from(["current", "next"]),
       st.sampled_from(["panic", "console", "quiet", "debug"]), st.sampled_from(["", "3", "x"]))
def test_grub_properties(text: str, slot: str, which: str, key: str, value: str) -> None:
    model = f"grub.cmdline.{which}"
    request = config(model, (key, value))
    with node_with(GRUB_CFG, text) as root:
        apply(root, request, slot=slot)  # type: ignore[arg-type]
        once = read(root, GRUB_CFG)
        assert not apply(root, request, slot=slot).changed  # type: ignore[arg-type]
        assert read(root, GRUB_CFG) == once
        target = "PARTUUID=1" if (slot == "A") == (which == "current") else "PARTUUID=2"
        assert untouched(once, lambda ln: target in ln) == untouched(text, lambda ln: target in ln)
    with node_with(GRUB_CFG, text) as root:
        apply(root, config(model, ("kubeos.test", "1")), slot=slot)  # type: ignore[arg-type]
        apply(root, config(model, ("kubeos.test", "1", "delete")),
              slot=slot)  # type: ignore[arg-type]
        assert read(root, GRUB_CFG) == text


# --- kubernetes.kubelet ------------------------------------------------------------------------

SCALARS = st.one_of(st.integers(-5, 10**6), s.VALUE, st.booleans(), st.just("0"))


@FAST
@given(s.yaml_files(), st.sampled_from(s.YAML_KEYS), SCALARS)
def test_kubelet_properties(text: str, key: str, value: object) -> None:
    path = "/var/lib/kubelet/config.yaml"
    request = config("kubernetes.kubelet", (key, value))
    is_list = any(line.startswith(f"{key}:") and (line.rstrip().endswith("]") or
                                                  line.split("#")[0].rstrip().endswith(":"))
                  for line in text.splitlines())
    if not is_list:
        check_idempotent(path, text, request)
    check_add_delete(path, text, config("kubernetes.kubelet", ("newKey", value)),
                     config("kubernetes.kubelet", ("newKey", value, "delete")))
    scalar_line = [i for i, line in enumerate(text.splitlines())
                   if line.startswith(f"{key}:") and not is_list]
    with node_with(path, text) as root:
        result = apply(root, request)
        after = read(root, path).splitlines()
        if scalar_line and result.changed:
            # Editing one scalar changes exactly its line, whatever the spacing elsewhere.
            before = text.splitlines()
            assert len(after) == len(before)
            assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == (
                scalar_line)


# --- container.containerd ----------------------------------------------------------------------

@FAST
@given(s.toml_files(), st.sampled_from(["", "grpc.", "debug.", "newtable."]),
       st.sampled_from(s.TOML_KEYS), SCALARS)
def test_containerd_properties(text: str, table: str, key: str, value: object) -> None:
    path = "/etc/containerd/config.toml"
    full_key = f"{table}{key}"
    request = config("container.containerd", (full_key, value))
    check_idempotent(path, text, request)
    if not table or f"[{table[:-1]}]" in text:
        check_add_delete(path, text, config("container.containerd", (f"{table}zz_new", value)),
                         config("container.containerd", (f"{table}zz_new", value, "delete")))
    with node_with(path, text) as root:
        result = apply(root, request)
        after = read(root, path)
        if result.changed and table != "newtable.":
            before_lines, after_lines = text.splitlines(), after.splitlines()
            if len(before_lines) == len(after_lines):
                diffs = [i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=True))
                         if a != b]
                assert len(diffs) == 1
                assert after_lines[diffs[0]].lstrip().startswith(f"{key} =")
