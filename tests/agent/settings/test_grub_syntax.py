"""GRUB values that would break grub.cfg are refused, and every file written still parses.

Both slots' menu entries live in one grub.cfg: a single bad value used to make a node
unbootable. Checked against GRUB's own ``grub-script-check`` (grub-common, installed by
hack/setup.sh) as well as the in-Python grammar check.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeos.agent.settings import SettingsError
from kubeos.agent.settings.grub_syntax import grub_script_check, script_error
from kubeos.kbimg import grub as kbimg_grub

from .support import GRUB_CFG, apply, config, read, reference_grub_cfg, write

EXAMPLES = int(os.environ.get("KUBEOS_PROPERTY_EXAMPLES", "60"))
needs_tool = pytest.mark.skipif(shutil.which("grub-script-check") is None,
                                reason="grub-script-check (grub-common) is not installed")


@pytest.mark.parametrize("value", ['"', "}", 'a"b', "x;}", "$(reboot)", "a\\", "a'b", "#x",
                                   "a{b", "x|y", "a&&b", "a\tb"])
@pytest.mark.parametrize("model", ["grub.cmdline.current", "grub.cmdline.next"])
def test_values_grub_would_split_are_refused_and_nothing_changes(
    tmp_path: Path, model: str, value: str
) -> None:
    original = reference_grub_cfg()
    write(tmp_path, GRUB_CFG, original)
    with pytest.raises(SettingsError) as err:
        apply(tmp_path, config(model, ("panic", "5"), ("console", value)))
    message = str(err.value)
    assert "'console'" in message and model in message
    assert "holds" in message or "spaces" in message
    assert read(tmp_path, GRUB_CFG) == original  # panic=5 was not written either


@pytest.mark.parametrize("key", ['a"', "x}", "k;reboot", "a b"])
def test_keys_grub_would_split_are_refused(tmp_path: Path, key: str) -> None:
    original = reference_grub_cfg()
    write(tmp_path, GRUB_CFG, original)
    with pytest.raises(SettingsError, match="the key holds"):
        apply(tmp_path, config("grub.cmdline.current", (key, "1")))
    assert read(tmp_path, GRUB_CFG) == original


def test_values_with_spaces_are_quoted_and_still_parse(tmp_path: Path) -> None:
    write(tmp_path, GRUB_CFG, reference_grub_cfg())
    apply(tmp_path, config("grub.cmdline.current", ("dyndbg", "file x.c +p")))
    text = read(tmp_path, GRUB_CFG)
    assert 'dyndbg="file x.c +p"' in text
    assert script_error(text) is None and grub_script_check(text) is None


@pytest.mark.parametrize("broken, where", [
    ("menuentry 'A' {\n linux /v root=x\n", "never closed"),
    ("linux /v root=x }\n", "closes nothing"),
    ('linux /v root="x\n', "double quote"),
    ("if true; then\n echo\n", "never closed by 'fi'"),
])
def test_the_grammar_check_finds_what_grub_refuses(broken: str, where: str) -> None:
    problem = script_error(broken)
    assert problem is not None and where in problem
    if shutil.which("grub-script-check"):
        assert grub_script_check(broken) is not None


def test_the_grammar_check_accepts_the_files_kubeos_writes() -> None:
    for text in (reference_grub_cfg(), kbimg_grub.grub_cfg(kbimg_grub.RootRef.by_label()),
                 kbimg_grub.EMBEDDED_CFG):
        assert script_error(text) is None, text
        assert grub_script_check(text) is None


_WORD = st.text(alphabet="abcXYZ019._,:/+=@%^~!-", min_size=1, max_size=12)
_KEY = st.text(alphabet="abcdefxyz_.-0123", min_size=1, max_size=10)


@needs_tool
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(_KEY, st.one_of(st.none(), _WORD,
                                             st.lists(_WORD, min_size=2, max_size=3)
                                             .map(" ".join))),
                   min_size=1, max_size=5, unique_by=lambda p: p[0]),
    model=st.sampled_from(["grub.cmdline.current", "grub.cmdline.next"]),
)
def test_grub_script_check_accepts_every_file_the_engine_writes(
    pairs: list[tuple[str, str | None]], model: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, GRUB_CFG, reference_grub_cfg())
        items = [(key, "" if value is None else value) for key, value in pairs]
        apply(root, config(model, *items))
        text = read(root, GRUB_CFG)
        assert script_error(text) is None
        assert grub_script_check(text) is None
