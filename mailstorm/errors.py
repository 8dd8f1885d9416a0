"""Every exception class mailstorm defines, in one tree, and the exit code each kind of failure maps to.

    Exception
     └── MailstormError ............ 3   base of every error mailstorm raises on purpose
          ├── UserError ............ 2   bad input: a scenario file, a spec, an argument, an address
          │    ├── ConfigError ..... 2   a configuration file or spec failed validation (names the field)
          │    │    └── FieldError . 2   a cross-field check that knows its field's path (also a ValueError)
          │    ├── TargetNotAllowed  2   a non-loopback address the user did not allow
          │    └── BadRequest ...... 2   an HTTP API request the fake ESP refuses (carries that ESP's answer)
          ├── HarnessError ......... 3   mailstorm could not do its job (a start failed, a deadline passed)
          │    └── PartDied ........ 3   the fake ESP, the load or the chaos proxy stopped when it should not
          └── TargetDied ........... 1   the SUT died without the timeline killing it: a finding (run fails)
    BaseException
     └── Interrupted ........ 130/143   SIGINT/SIGTERM to the runner (128 + the signal's number)

The number is the class's ``exit_code``: the CLI prints a ``UserError`` on one line and exits 2, any other
``MailstormError`` with its own code; nothing else reaches the user as a traceback. ``Interrupted`` is a
``BaseException``, as ``KeyboardInterrupt`` is, so no ``except Exception`` on its way swallows it.
``FieldError`` is also a ``ValueError`` because pydantic turns only that (inside a validator) into a
validation error, which then carries the field's path. A test keeps this drawing and the classes the same.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

EXIT_OK = 0
EXIT_SLO_BREACHED = 1  # also a run that failed for a reason about the SUT (TargetDied)
EXIT_BAD_INPUT = 2
EXIT_HARNESS_FAILED = 3
EXIT_SIGNALLED = 128  # plus the signal's number, as a shell reports a process a signal ended


class MailstormError(Exception):
    """Base of every error mailstorm raises on purpose."""

    exit_code = EXIT_HARNESS_FAILED


class UserError(MailstormError):
    """Bad input from the user: a scenario file, a fault spec, a CLI argument, a target address."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UserError):
    """A configuration file or spec failed validation; the message names the field (and line)."""


class FieldError(ConfigError, ValueError):
    """A cross-field check inside a model validator that knows the path of the field it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class TargetNotAllowed(UserError):
    """A non-loopback address was named without the user allowing it explicitly."""


class BadRequest(UserError):
    """A request a fake ESP's HTTP API refuses before sending anything; ``response`` is that ESP's answer."""

    def __init__(self, response: web.Response, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason


class HarnessError(MailstormError):
    """mailstorm could not do its job: a component failed to start, died, or a deadline passed."""

    exit_code = EXIT_HARNESS_FAILED


class PartDied(HarnessError):
    """A part of the harness (the fake ESP, the load, the chaos proxy) stopped when it should not have."""


class TargetDied(MailstormError):
    """The SUT died without the timeline killing it: a finding about the SUT, so the run fails with the
    verdict's failing code after its reports are built, whatever the SLOs say."""

    exit_code = EXIT_SLO_BREACHED


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the runner (raised in its main thread by its signal handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNALLED + self.signum
