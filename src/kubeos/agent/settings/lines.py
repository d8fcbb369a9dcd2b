"""Splitting text into lines without losing line endings, so untouched lines stay byte-exact."""

from __future__ import annotations


def split_lines(text: str) -> list[tuple[str, str]]:
    """``[(body, ending), ...]`` where ending is ``"\\n"``, ``"\\r\\n"`` or ``""`` (last line)."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        out.append((body, line[len(body):]))
    return out


def append_lines(text: str, new_lines: list[str]) -> str:
    """Append lines, adding the missing final newline of ``text`` first."""
    if not new_lines:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(line + "\n" for line in new_lines)
