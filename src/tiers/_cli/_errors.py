"""The command line's own error type and its exit statuses."""

OK = 0
FAILED = 1
USAGE = 2
DAMAGED = 3
"""``tiers verify`` found damage it was not asked to fix."""
NOTHING = 4
"""Nothing matched: no such key, or no entry passed the filters."""


class CLIError(Exception):
    """A failure reported as one line on stderr (``tiers: error: ...``) with `status`."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status
