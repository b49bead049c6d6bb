"""The command line's own error type."""


class CLIError(Exception):
    """A failure reported as one line on stderr with exit status 1."""
