"""The one exception hierarchy of the os-agent.

Every failure the agent reports over RPC is an :class:`AgentError`; its ``code`` becomes the
JSON-RPC error code and its message the error message, so a caller sees one clear sentence
instead of a traceback. The reference answers every server-side failure with code ``-1``; we keep
that for operational errors and use the standard JSON-RPC codes only for protocol errors.

The client raises the subclasses of :class:`AgentClientError`, which live here too so that the
proxy can catch them without importing anything else of the agent.

::

    AgentError
    ├── ProtocolError            parse error, invalid request, method not found, invalid params
    ├── BusyError                another operation is running
    ├── InvalidRequestError      a request field is wrong (names the field); nothing was changed
    ├── UnsupportedError         a feature that exists in the protocol but not here (yet)
    ├── UpgradeError
    │   ├── InsecureSourceError  http without flagSafe, bad URL scheme
    │   ├── CertificateError     missing/unsafe certificate names or files
    │   ├── DownloadError        connection, TLS, HTTP status, truncated stream
    │   ├── ChecksumMismatchError
    │   ├── SpaceError           payload larger than the partition, disk full
    │   └── PayloadError         payload is neither a rootfs tar nor a filesystem image, or unsafe
    ├── BootError                boot layout not understood (mountinfo, partitions, grubenv)
    │   └── SlotNotBootableError the target slot lacks a kernel, initrd or os-release
    ├── StateError               the operation is not allowed now (trial pending, nothing staged,
    │                            rollback target holds another version)
    ├── ConfigureError           the settings engine refused or failed
    └── AgentClientError         raised by the client only
        ├── AgentConnectionError cannot connect to the socket
        ├── AgentTimeoutError    connect or call timed out
        ├── AgentResponseError   the response is not valid JSON-RPC
        └── AgentRpcError        the agent answered with an error object (keeps code and message)
"""

from __future__ import annotations

# JSON-RPC 2.0 standard codes, and the reference's catch-all server error.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -1
# Additive codes in the JSON-RPC "server error" range so that clients can tell busy apart.
BUSY = -32000


class AgentError(Exception):
    """Base class: a failure with a one-line message and a JSON-RPC error code."""

    code: int = SERVER_ERROR

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ProtocolError(AgentError):
    """The request is not valid JSON-RPC; the code says which standard error it is."""


class BusyError(AgentError):
    """Another operation holds the agent; the reference text is kept for compatible callers."""

    code = BUSY

    def __init__(self, running: str) -> None:
        super().__init__(f"os-agent is processing another request ({running}); try again later")
        self.running = running


class InvalidRequestError(AgentError):
    """A request field is invalid; raised before anything is changed."""


class UnsupportedError(AgentError):
    """Part of the protocol this agent does not implement yet."""


class UpgradeError(AgentError):
    """Preparing an upgrade failed; the boot entry was not touched."""


class InsecureSourceError(UpgradeError):
    """The image URL is not https and flagSafe was not given, or its scheme is unknown."""


class CertificateError(UpgradeError):
    """A certificate name is missing, unsafe, or names no readable file."""


class DownloadError(UpgradeError):
    """Connection, TLS or HTTP failure, or the stream ended early."""


class ChecksumMismatchError(UpgradeError):
    """The sha256 of the received bytes differs from the requested check_sum."""


class SpaceError(UpgradeError):
    """The payload does not fit the partition, or the disk ran full."""


class PayloadError(UpgradeError):
    """The payload is not a usable rootfs tar or filesystem image."""


class BootError(AgentError):
    """The boot layout (mountinfo, A/B partitions, grubenv) could not be read or written."""


class SlotNotBootableError(BootError):
    """The slot lacks a kernel, an initrd or an os-release; switching to it is refused."""


class StateError(AgentError):
    """The operation is not allowed in the node's current boot state."""


class ConfigureError(AgentError):
    """The settings engine refused or failed to apply a configuration."""


class AgentClientError(AgentError):
    """Raised by :mod:`kubeos.agent.client` only."""


class AgentConnectionError(AgentClientError):
    """The agent socket cannot be reached."""


class AgentTimeoutError(AgentClientError):
    """Connecting or waiting for the answer took longer than the caller allowed."""


class AgentResponseError(AgentClientError):
    """The agent's answer is not a valid JSON-RPC response."""


class AgentRpcError(AgentClientError):
    """The agent answered with an error object."""

    @property
    def is_busy(self) -> bool:
        return self.code == BUSY or "processing another request" in self.message

    @property
    def is_method_not_found(self) -> bool:
        return self.code == METHOD_NOT_FOUND
