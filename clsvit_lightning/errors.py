"""Errors about what the user gave (a file, an option value), which ``clsvit`` reports in one line.

jsonargparse wraps an exception raised while it builds the model in its own, with a dump of the
whole config; ``clsvit`` (cli.py) finds a :class:`ConfigError` in that chain and prints its message
alone. Raise one for a bad value or file, never for a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class ConfigError(ValueError):
    """A bad option value or input file; the message names it and says what was expected."""


def find_config_error(
    error: BaseException, kinds: tuple[type[BaseException], ...] = (ConfigError,)
) -> BaseException | None:
    """The first error of ``kinds`` (by default :class:`ConfigError`) in the cause/context chain of ``error``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def check_option_values(
    owner: str,
    values: Mapping[str, object],
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    unit_interval: Iterable[str] = (),
) -> None:
    """Raise a :class:`ConfigError` naming the first option of ``values`` outside its range (None is skipped).

    ``not value > 0`` rather than ``value <= 0``: NaN is refused too.
    """
    rules = [(positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")]
    rules.append((unit_interval, lambda v: 0 <= v <= 1, "in [0, 1]"))
    for names, valid, expected in rules:
        for name in names:
            value = values[name]
            if value is not None and not valid(value):
                raise ConfigError(f"{owner}: {name} must be {expected}, got {value!r}")
