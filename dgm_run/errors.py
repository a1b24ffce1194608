"""The one exception type for a user's mistake.

The CLI turns a UserError into a single line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a config value, a missing or corrupt file, an unavailable device."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)
