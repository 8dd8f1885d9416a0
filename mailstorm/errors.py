"""The one small exception hierarchy, and the exit code each kind of failure maps to.

Every error a user can cause is a ``UserError`` whose message names what is wrong (field, line, file,
address); the CLI prints it on one line and exits 2. ``HarnessError`` means mailstorm itself could not
do its job (a child process died, a port never opened) and exits 3. Nothing else reaches the user as a
traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SLO_BREACHED = 1
EXIT_BAD_INPUT = 2
EXIT_HARNESS_FAILED = 3


class MailstormError(Exception):
    """Base of every error mailstorm raises on purpose."""

    exit_code = EXIT_HARNESS_FAILED


class UserError(MailstormError):
    """Bad input from the user: a scenario file, a fault spec, a CLI argument, a target address."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UserError):
    """A configuration file or spec failed validation; the message names the field (and line)."""


class TargetNotAllowed(UserError):
    """A non-loopback address was named without the user allowing it explicitly."""


class HarnessError(MailstormError):
    """mailstorm could not do its job: a component failed to start, died, or a deadline passed."""

    exit_code = EXIT_HARNESS_FAILED
