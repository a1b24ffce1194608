"""The ground floor's exceptions: a user's mistake, and a run stopped by a signal.

The CLI turns a UserError into a single line on stderr and a non-zero exit (`fail`), and an
Interrupted into the command that resumes the run; anything else is a bug and keeps its
traceback.
"""

import signal
import sys
from typing import NoReturn

# The exit status of a command that a user error stopped.
EXIT_USER_ERROR = 2


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """End the command with a user error's one line on stderr."""
    print(f"dgm-run: error: {message}", file=sys.stderr)
    sys.exit(code)


class UserError(Exception):
    """Bad input: a config value, a missing or corrupt file, an unavailable device."""


class WriteError(UserError):
    """A file could not be written (a full disk, a read-only folder); the file it would have replaced is intact."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was written at the current batch."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum = signum
        self.step = step
