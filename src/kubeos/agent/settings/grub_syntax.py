"""What may go into a GRUB ``linux`` line, and a check of the grub.cfg the engine writes.

Both menu entries (slot A and slot B) live in one grub.cfg, so a value that breaks GRUB's script
syntax — an unbalanced ``"``, a ``}`` that closes the menu entry early, a ``;`` that starts a
new command — makes the node unbootable on *both* slots. Two lines of defence:

1. :func:`check_argument`: a key or value must be made only of characters GRUB's lexer keeps
   inside one word without quoting (letters, digits and ``. _ , : / + = @ % ^ ~ ! -``); a value
   may also hold spaces, and is then written double-quoted, which the kernel's parser unquotes.
   Everything else — quotes, ``\\``, ``$``, ``;``, ``&``, ``|``, ``<``, ``>``, ``{``, ``}``,
   ``(``, ``)``, ``#``, ``*``, ``?``, ``[``, ``]``, control characters — is refused with the key
   and the character named.
2. :func:`script_error`: an in-Python check of the GRUB script grammar grub.cfg uses (quotes,
   escapes, ``${...}``, comments, ``{ }`` blocks, ``if/fi``, ``for/while/until ... done``), and
   :func:`grub_script_check` with GRUB's own ``grub-script-check`` where it is installed. The
   engine refuses an edit that turns a file that passed into one that does not.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

_WORD_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._,:/+=@%^~!-"
)
_OPENERS = {"if": "fi", "for": "done", "while": "done", "until": "done"}


def bad_character(text: str, *, spaces: bool) -> str | None:
    """The first character of ``text`` GRUB would not keep in one plain word, or None."""
    for char in text:
        if char in _WORD_CHARS or (spaces and char == " "):
            continue
        return char
    return None


def check_argument(key: str, value: str | None) -> str | None:
    """Why ``key[=value]`` cannot be one kernel argument on a GRUB line, or None when it can."""
    if not key:
        return "an empty key"
    char = bad_character(key, spaces=False)
    if char is not None:
        return f"the key holds {char!r}, which GRUB's parser does not keep in a kernel argument"
    if value is None:
        return None
    char = bad_character(value, spaces=True)
    if char is not None:
        return f"the value holds {char!r}, which GRUB's parser does not keep in a kernel argument"
    if value != value.strip(" ") or "  " in value:
        return "the value has leading, trailing or repeated spaces"
    return None


class _Lexer:
    """Splits GRUB script text into commands of words; records the first syntax error."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def _error(self, what: str) -> ValueError:
        return ValueError(f"line {self.line}: {what}")

    def commands(self) -> list[tuple[int, list[str]]]:
        out: list[tuple[int, list[str]]] = []
        words: list[str] = []
        start = self.line
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t":
                self.pos += 1
            elif char in "\n;":
                if words:
                    out.append((start, words))
                words = []
                if char == "\n":
                    self.line += 1
                self.pos += 1
                start = self.line
            elif char == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            elif char in "{}":
                if not words:
                    start = self.line
                words.append(char)
                self.pos += 1
            else:
                if not words:
                    start = self.line
                words.append(self._word())
        if words:
            out.append((start, words))
        return out

    def _word(self) -> str:
        text = self.text
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\n;{}" and not (char in "{}" and chars and chars[-1] == "$"):
                break
            if char == "\\":
                if self.pos + 1 >= len(text):
                    raise self._error("a backslash at the end of the file")
                if text[self.pos + 1] == "\n":
                    self.line += 1
                chars.append(text[self.pos + 1])
                self.pos += 2
            elif char == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self._error("a single quote that is never closed")
                self.line += text.count("\n", self.pos, end)
                chars.append(text[self.pos + 1:end])
                self.pos = end + 1
            elif char == '"':
                chars.append(self._double_quoted())
            elif char == "$" and text.startswith("{", self.pos + 1):
                end = text.find("}", self.pos + 2)
                if end < 0 or "\n" in text[self.pos:end]:
                    raise self._error("a '${' that is never closed")
                chars.append(text[self.pos:end + 1])
                self.pos = end + 1
            else:
                chars.append(char)
                self.pos += 1
        return "".join(chars) or '""'

    def _double_quoted(self) -> str:
        text = self.text
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\" and self.pos + 1 < len(text):
                chars.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char == "\n":
                self.line += 1
            chars.append(char)
            self.pos += 1
        raise self._error("a double quote that is never closed")


def script_error(text: str) -> str | None:
    """The first grammar error of a grub.cfg, or None when its structure is sound."""
    try:
        commands = _Lexer(text).commands()
    except ValueError as exc:
        return str(exc)
    stack: list[tuple[str, int]] = []  # expected closer, line opened
    for line, words in commands:
        for index, word in enumerate(words):
            first = index == 0
            if word == "{":
                stack.append(("}", line))
            elif word == "}":
                if not stack or stack[-1][0] != "}":
                    return f"line {line}: a '}}' that closes nothing"
                stack.pop()
            elif first and word in _OPENERS:
                stack.append((_OPENERS[word], line))
            elif first and word in ("fi", "done"):
                if not stack or stack[-1][0] != word:
                    return f"line {line}: a {word!r} that closes nothing"
                stack.pop()
    if stack:
        closer, line = stack[-1]
        return f"line {line}: a block opened here is never closed by {closer!r}"
    return None


def grub_script_check(text: str) -> str | None:
    """What GRUB's own ``grub-script-check`` says of ``text``; None when it passes or is absent."""
    tool = shutil.which("grub-script-check")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as tmp:
        tmp.write(text)
        tmp.flush()
        done = subprocess.run([tool, tmp.name], capture_output=True, text=True, check=False,
                              timeout=30)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()
    return f"grub-script-check: {said[-1] if said else f'exit {done.returncode}'}"


def new_errors(before: str, after: str) -> str | None:
    """An error ``after`` has that ``before`` did not: the edit broke the file's syntax."""
    for check in (script_error, grub_script_check):
        problem = check(after)
        if problem is not None and check(before) is None:
            return problem
    return None
