"""Error types that the CLI turns into one clear line and exit status 1 (no tracebacks)."""


class KbimgError(Exception):
    """Base class of every error kbimg reports to its user."""


class ConfigError(KbimgError):
    """A kbimg.toml value is missing or invalid; the message starts with ``table.key``."""


class BuildError(KbimgError):
    """A build step failed (an external program, a missing file in the root, a held lock)."""
