"""Errors a user can act on: printed as one line, never as a traceback."""


class OpsctlError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits 2."""

    exit_code = 2
