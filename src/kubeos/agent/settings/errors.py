"""The one exception hierarchy of the settings engine.

Every error names the model, the key and the file it concerns (when known), because the
message travels unchanged from the node to the OS custom resource's status, where an operator
must be able to act on it without logging into the node. Catch :class:`SettingsError` to handle
them all; the subclasses exist so callers can tell bad input (:class:`RequestError` and its
subclasses: retrying will not help) from node-side trouble (:class:`WriteError`,
:class:`ServiceRestartError`: retrying may help).
"""

from __future__ import annotations

from pathlib import PurePath


class SettingsError(Exception):
    """Base class: a settings request could not be applied; nothing was changed unless stated."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        key: str | None = None,
        file: PurePath | str | None = None,
    ) -> None:
        self.model = model
        self.key = key
        self.file = str(file) if file is not None else None
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.key is not None:
            where.append(f"key {self.key!r}")
        if self.file is not None:
            where.append(f"file {self.file}")
        prefix = f"{self.model}: " if self.model else ""
        suffix = f" ({', '.join(where)})" if where else ""
        return f"{prefix}{self.detail}{suffix}"


class RequestError(SettingsError):
    """The request itself is malformed (wrong types, duplicate keys, bad operation)."""


class DuplicateKeyError(RequestError):
    """The same key appears twice in one config: its order of application would be ambiguous."""


class UnknownModelError(RequestError):
    """The model name is not one we know; ``suggestion`` holds the closest known name, if any."""

    def __init__(self, model: str, suggestion: str | None) -> None:
        self.suggestion = suggestion
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"unknown configuration model {model!r}{hint}", model=model)


class ConfigPathError(RequestError):
    """``configpath`` is relative, escapes through ``..`` or is otherwise unusable."""


class SysctlKeyError(RequestError):
    """A ``kernel.sysctl`` key names no file under /proc/sys (typo, or module not loaded)."""


class ValueTypeError(RequestError):
    """A value cannot be represented in the target file format (e.g. TOML integer overflow)."""


class ParseError(SettingsError):
    """An existing configuration file cannot be parsed; ``line`` is 1-based when known."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        file: PurePath | str | None = None,
        line: int | None = None,
    ) -> None:
        self.line = line
        if line is not None:
            message = f"{message} at line {line}"
        super().__init__(message, model=model, file=file)


class MissingFileError(SettingsError):
    """A file the model must edit (grub.cfg, limits.conf) or a parent directory is missing."""


class WriteError(SettingsError):
    """Writing failed; the files already replaced by this request were restored."""


class ServiceRestartError(SettingsError):
    """The files were written, but the restart hook failed for ``service``."""

    def __init__(self, service: str, cause: BaseException) -> None:
        self.service = service
        #: The :class:`~kubeos.agent.settings.result.ApplyResult` of the written request.
        self.result: object = None
        super().__init__(f"configuration written but restarting {service} failed: {cause}")
