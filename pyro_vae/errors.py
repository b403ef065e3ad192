"""Argument checks that raise errors naming the argument, the value received and what is accepted.

Every public entry point validates its inputs with these helpers, so that the library raises
``ValueError``/``TypeError`` with one readable line and the CLI can print that line and exit 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else raise ``ValueError``.

    Only a ``str`` can match: ``in`` would compare a numpy array element-wise (a 0-d string
    array would pass, a longer one raise numpy's ambiguity error).
    """
    choices = sorted(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(choices)}")
    return value


#: The largest count or size accepted: a 64-bit integer (torch's sizes and indices).
MAX_INT = 2**63 - 1


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is an int in 1..MAX_INT (bools refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if value > MAX_INT:
        raise ValueError(f"{name} must be at most {MAX_INT} (a 64-bit integer), got {value}")
    return value


def check_non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    if value > MAX_INT:
        raise ValueError(f"{name} must be at most {MAX_INT} (a 64-bit integer), got {value}")
    return value


#: The largest seed accepted: numpy's seeding limit (the evaluation also uses seed + 1).
MAX_SEED = 2**31 - 1


def check_seed(name: str, value) -> int:
    """Return ``value`` if it is an int in ``[0, MAX_SEED]``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    if value > MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is True or False (not 0/1 or a string), else raise ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_positive_float(name: str, value) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return float(value)


def check_fraction(name: str, value, *, allow_zero: bool = True) -> float:
    """Return ``float(value)`` if it lies in [0, 1) (or (0, 1)), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def check_int_tuple(name: str, value) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints (e.g. hidden layer sizes)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of positive integers, got {value!r}")
    items = tuple(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ValueError(f"{name} must contain positive integers only, got {list(items)}")
        if item > MAX_INT:
            raise ValueError(f"{name} must contain integers of at most {MAX_INT}, got {item}")
    return items


def check_instance(name: str, value, cls, hint: str = "") -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is a ``cls`` (a class or tuple)."""
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name} must be a {names}, got {type(value).__name__}"
                        + (f"; {hint}" if hint else ""))


def is_allocation_error(err: BaseException) -> bool:
    """Whether ``err`` is torch's or Python's "not enough memory" (CPU or CUDA)."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def allocation_message(err: BaseException) -> str:
    """The size torch tried to allocate, in words, from its error message (or a plain phrase)."""
    import re  # noqa: PLC0415

    found = re.search(r"allocate (?:memory: you tried to allocate )?(\d+) bytes", str(err))
    if found:
        return f"it needs {int(found.group(1)) / 2**30:,.1f} GiB in one allocation"
    return "it does not fit in memory"
