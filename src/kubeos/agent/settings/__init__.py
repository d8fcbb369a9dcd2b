"""The os-agent settings engine: the seven ``sysconfigs`` models, applied all or nothing.

Entry points: :func:`parse_request` (CR ``sysconfigs``, RPC ``ConfigureRequest`` or whole OS
CR) and :func:`apply_settings`. Errors derive from :class:`SettingsError`. This package ships
in the OS image, so it imports only the standard library, ruamel.yaml and tomlkit.
"""

from kubeos.agent.settings.engine import MODELS, RestartHook, apply_settings, get_model
from kubeos.agent.settings.errors import (
    ConfigPathError,
    DuplicateKeyError,
    MissingFileError,
    ParseError,
    RequestError,
    ServiceRestartError,
    SettingsError,
    SysctlKeyError,
    UnknownModelError,
    ValueTypeError,
    WriteError,
)
from kubeos.agent.settings.model import Slot
from kubeos.agent.settings.request import (
    ConfigRequest,
    Content,
    SettingsRequest,
    parse_config,
    parse_configs,
    parse_request,
)
from kubeos.agent.settings.result import ApplyResult, ConfigResult, FileChange, SettingsWarning

__all__ = [
    "MODELS",
    "ApplyResult",
    "ConfigPathError",
    "ConfigRequest",
    "ConfigResult",
    "Content",
    "DuplicateKeyError",
    "FileChange",
    "MissingFileError",
    "ParseError",
    "RequestError",
    "RestartHook",
    "ServiceRestartError",
    "SettingsError",
    "SettingsRequest",
    "SettingsWarning",
    "Slot",
    "SysctlKeyError",
    "UnknownModelError",
    "ValueTypeError",
    "WriteError",
    "apply_settings",
    "get_model",
    "parse_config",
    "parse_configs",
    "parse_request",
]
