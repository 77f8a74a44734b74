"""The project's user-facing errors: each message names the bad value or file and says how to fix it."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key (e.g. ``optimizer.lr``)."""


class DataError(RuntimeError):
    """The data set is missing or malformed; the message names the file and how to fix it."""
