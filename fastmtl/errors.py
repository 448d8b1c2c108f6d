"""Errors the ``fastmtl`` command reports as one clear line (exit code 2) instead of a traceback."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the valid choices."""


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row; the message names the last good checkpoint."""
