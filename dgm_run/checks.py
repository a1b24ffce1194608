"""Validation helpers for config schemas: a failed check names its key.

Schemas (the dataclasses of config groups, models and data sources) call these in
`__post_init__`; `config.validate_section` prefixes the section, so the user reads one
line such as `model.z_dim: must be a positive integer (got 0)`.
"""

from __future__ import annotations

from typing import Any


class InvalidValue(ValueError):
    """Raised by a schema's __post_init__; the validation prefixes the section name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise InvalidValue(key, message)


def check_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(value is None or value >= 1, name, f"must be a positive integer (got {value})")


def check_sizes(obj: Any, name: str) -> None:
    """A list of layer widths: every one a positive integer."""
    sizes = getattr(obj, name)
    check(all(size >= 1 for size in sizes), name, f"layer sizes must be positive integers (got {sizes})")


def check_choice(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    check(value in allowed, name, f"'{value}' is not allowed; choose one of {', '.join(allowed)}")
