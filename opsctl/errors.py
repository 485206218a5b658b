"""Errors a user can act on (printed as one line, never as a traceback) and opsctl's exit codes,
defined here once for the CLI and every flow."""

EXIT_OK = 0            # success: converged, ready, reloaded
EXIT_FAILED = 1        # findings, failed or unreachable hosts, a stopped rollout
EXIT_BAD_INPUT = 2     # could not run: bad input or environment, nothing changed
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class OpsctlError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits 2."""

    exit_code = EXIT_BAD_INPUT
