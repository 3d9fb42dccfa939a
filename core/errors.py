"""Error types that separate a user's mistake (clear message, exit 2) from a bug (traceback)."""


class FedftError(Exception):
    """Base class for errors fedft raises on purpose."""


class UsageError(FedftError):
    """Bad input from the user (a flag, a path, a file's contents): one line, exit code 2."""


class ProtocolError(FedftError):
    """A peer sent something that does not fit the protocol or the running strategy."""
