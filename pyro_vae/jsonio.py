"""JSON in and out of run directories: finite numbers only, checked reading, a small schema checker.

Every JSON file the library writes goes through :func:`dumps_finite` (no ``NaN`` or
``Infinity``: they are not JSON and other readers refuse them) and every JSON file it reads
goes through :func:`read_json_file` and :func:`check_schema`, so that a damaged or hand-edited
file is refused with one line naming the file and the field, never a traceback.

Example
-------
>>> from pyro_vae.jsonio import ListOf, check_schema, dumps_finite, loads_checked
>>> text = dumps_finite({"epochs": 2, "history": [{"epoch": 1, "elbo": -90.5}]}, indent=None)
>>> text
'{"epochs": 2, "history": [{"epoch": 1, "elbo": -90.5}]}'
>>> check_schema(loads_checked(text, path="metrics.json"),
...              {"epochs": int, "history": ListOf({"epoch": int, "elbo": float})},
...              path="metrics.json")
>>> dumps_finite({"test": {"elbo_stderr": float("nan")}})
Traceback (most recent call last):
...
ValueError: cannot write JSON: field test.elbo_stderr is nan, and JSON holds no NaN or Infinity
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np

#: Deepest nesting accepted on reading and writing; run files are 3-4 levels deep.
MAX_DEPTH = 64
#: Largest JSON file read (bytes); run files are kilobytes, so more means a wrong or damaged file.
MAX_BYTES = 64 * 2**20

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
# A JSON string, written as an unrolled loop so that an unterminated string cannot backtrack.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _join(where: str, key) -> str:
    """The JSON path of ``key`` below ``where``: ``test.elbo``, ``history[3]``, ``a['b c']``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return (f"{where}.{key}" if where else key) if _KEY.match(key) else f"{where}[{key!r}]"


def _field(where: str) -> str:
    return f"field {where}" if where else "the top level"


def dumps_finite(obj, *, indent: int | None = 2, nonfinite: str = "raise") -> str:
    """JSON text of ``obj`` that never contains ``NaN`` or ``Infinity``.

    ``obj`` is made of dicts with string keys, lists, tuples, str, int, float, bool, None and
    numpy scalars (converted to Python numbers). ``nonfinite`` says what becomes of a NaN or
    infinite float: ``"raise"`` (the default) raises ``ValueError`` naming its JSON path, which
    is right wherever a non-finite number means a bug or a diverged run that should have been
    caught before writing; ``"null"`` writes ``null``, for results where a number may
    legitimately not exist (the caller then stores the reason beside it).

    Example
    -------
    >>> dumps_finite({"a": [1.0, float("inf")]}, indent=None, nonfinite="null")
    '{"a": [1.0, null]}'
    """
    if nonfinite not in ("raise", "null"):
        raise ValueError(f"unknown nonfinite {nonfinite!r}; choose from: null, raise")

    def clean(value, where: str, depth: int):
        if depth > MAX_DEPTH:  # also stops a self-containing list from recursing forever
            raise ValueError(f"cannot write JSON: {_field(where)} is nested more than {MAX_DEPTH} deep")
        if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
            value = value.item()  # numpy scalar -> Python bool/int/float
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            if nonfinite == "null":
                return None
            raise ValueError(f"cannot write JSON: {_field(where)} is {value}, "
                             f"and JSON holds no NaN or Infinity")
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:  # json.dumps would turn them into strings, which do not read back the same
                raise TypeError(f"cannot write JSON: {_field(where)} has the non-string key {bad[0]!r}")
            return {k: clean(v, _join(where, k), depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, _join(where, i), depth + 1) for i, v in enumerate(value)]
        raise TypeError(f"cannot write JSON: {_field(where)} is a {type(value).__name__}, "
                        f"not a JSON value (convert tensors and arrays with .tolist())")

    return json.dumps(clean(obj, "", 0), indent=indent, allow_nan=False)


class _Refused(Exception):
    """Raised inside json's hooks; turned into one ValueError line by :func:`loads_checked`."""


def _refuse_constant(name: str):
    raise _Refused(f"holds {name}, which is not JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise _Refused(f"holds the number {text}, too large for a float")
    return value


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])  # only on the error path
        raise _Refused(f"has the key {dup!r} twice in one object")
    return obj


def _label(path, what: str) -> str:
    return f"{what} {str(path)!r}" if what else repr(str(path))


def _utf8_error(label: str, err: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{label} is not valid UTF-8 (byte 0x{err.object[err.start]:02x} "
                      f"at offset {err.start})")


def loads_checked(text: str | bytes, *, path, what: str = "", max_depth: int = MAX_DEPTH,
                  max_bytes: int = MAX_BYTES, duplicate_keys: bool = False):
    """Parse JSON ``text``, refusing with one ``ValueError`` line what is not plain, finite JSON.

    Refused: text over ``max_bytes`` (bytes; characters for ``str``), bytes that are not UTF-8,
    invalid JSON, ``NaN``/``Infinity`` literals and numbers too large for a float, nesting
    deeper than ``max_depth``, and (unless ``duplicate_keys``) a key repeated in one object,
    which a writer never produces. Messages name the source: ``what`` (e.g. "metrics file",
    may be empty) and ``path``, e.g. ``metrics file 'run/metrics.json' is not valid JSON
    (Expecting value: line 1 column 1 (char 0))``.

    Example
    -------
    >>> loads_checked('{"elbo": NaN}', path="metrics.json")
    Traceback (most recent call last):
    ...
    ValueError: 'metrics.json' holds NaN, which is not JSON (numbers must be finite)
    """
    label = _label(path, what)
    if len(text) > max_bytes:  # a str has at most as many characters as its UTF-8 bytes
        unit = "characters" if isinstance(text, str) else "bytes"
        raise ValueError(f"{label} is {len(text)} {unit}, more than the {max_bytes} accepted")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise _utf8_error(label, err) from None
    if not text.strip():
        raise ValueError(f"{label} is empty, not JSON")
    # Depth first, without recursion: json's parser recurses per bracket and would raise
    # RecursionError (or worse) on a file of 100000 '['. Strings are removed so that brackets
    # inside them do not count.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)
    if depth > max_depth:
        raise ValueError(f"{label} is nested {depth} deep, more than the {max_depth} accepted")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=None if duplicate_keys else _unique_keys)
    except _Refused as err:
        raise ValueError(f"{label} {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{label} is not valid JSON ({err})") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits (Python's limit)
        raise ValueError(f"{label} is not readable JSON ({err})") from None
    except RecursionError:  # a backstop: the scan above should have refused it already
        raise ValueError(f"{label} is nested too deeply to parse") from None


def read_json_file(path, *, what: str = "", max_depth: int = MAX_DEPTH,
                   max_bytes: int = MAX_BYTES, duplicate_keys: bool = False):
    """Read the JSON file ``path`` with the checks (and options) of :func:`loads_checked`.

    Every failure, a missing or unreadable file included, is one ``ValueError`` line naming the
    file; its size is checked before it is read, so a huge file is never loaded.

    Example
    -------
    >>> read_json_file("/nonexistent/config.json", what="run configuration")
    Traceback (most recent call last):
    ...
    ValueError: run configuration '/nonexistent/config.json' could not be read (No such file or directory)
    """
    label, path = _label(path, what), Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{label} is {size} bytes, more than the {max_bytes} accepted")
        text = path.read_text(encoding="utf-8")  # strict: bad bytes raise, never become U+FFFD
    except UnicodeDecodeError as err:
        raise _utf8_error(label, err) from None
    except OSError as err:
        raise ValueError(f"{label} could not be read ({err.strerror})") from None
    return loads_checked(text, path=path, what=what, max_depth=max_depth, max_bytes=max_bytes,
                         duplicate_keys=duplicate_keys)


# --- schemas -------------------------------------------------------------------------------
# A schema is plain Python: a type (int: not bool; float: any number, int included; str; bool;
# dict: any object; list: any list; object: anything), a dict of field schemas (an object with
# those fields, other keys allowed), or one of the small markers below.

@dataclass(frozen=True)
class Optional:
    """``None`` (JSON null) or a value of ``schema`` (a schema marker, not ``typing.Optional``)."""
    schema: object


@dataclass(frozen=True)
class NotRequired:
    """A field of an object schema that may be absent (when present it must match ``schema``)."""
    schema: object


@dataclass(frozen=True)
class ListOf:
    """A list whose every item matches ``schema``."""
    schema: object


@dataclass(frozen=True)
class DictOf:
    """An object with values of ``schema`` and any keys (``keys=str``) or a :class:`OneOf`'s."""
    schema: object
    keys: object = str


@dataclass(frozen=True)
class Object:
    """An object with the fields of ``fields``; ``extra_keys_allowed=False`` refuses other keys."""
    fields: dict
    extra_keys_allowed: bool = True


class OneOf:
    """One of the literal ``choices``, compared with their type (``True`` is not ``1``)."""

    def __init__(self, *choices):
        self.choices = choices


#: A finite number (int or float): values about to be written can hold NaN, JSON read by
#: :func:`loads_checked` cannot.
Finite = type("Finite", (), {"__repr__": lambda self: "Finite"})()

_NOUNS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          dict: "a JSON object", list: "a list", object: "anything", Finite: "a finite number",
          type(None): "null"}


def _noun(schema) -> str:
    if isinstance(schema, Optional):
        return f"null or {_noun(schema.schema)}"
    if isinstance(schema, OneOf):
        return "one of " + ", ".join(json.dumps(c) for c in schema.choices)
    if not any(_kind(schema) is known for known in _NOUNS):  # `is`: a schema may be unhashable
        raise TypeError(f"{schema!r} is not a schema; see the schema section of pyro_vae.jsonio")
    return _NOUNS[_kind(schema)]


def _kind(schema):
    """The plain type (or ``Finite``) that a container schema's values have."""
    if isinstance(schema, ListOf):
        return list
    return dict if isinstance(schema, (dict, Object, DictOf)) else schema


def _is(value, kind) -> bool:
    if kind is object:
        return True
    if not isinstance(kind, type) and kind is not Finite:
        _noun(kind)  # raises TypeError: not a schema
    if isinstance(value, bool):  # bool is an int subclass; true is not the number 1 here
        return kind is bool
    if kind is float or kind is Finite:
        return isinstance(value, (int, float)) and (kind is float or math.isfinite(value))
    return isinstance(value, kind)


def _shown(value) -> str:
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} items"
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_schema(value, schema, *, path, what: str = "", where: str = "") -> None:
    """Raise ``ValueError`` if ``value`` does not match ``schema``, naming the file and field.

    ``where`` is the JSON path of ``value`` inside the file (``""``: the whole file), e.g.
    ``metrics file 'run/metrics.json': field history[3].epoch must be an integer, got 'abc'``.

    Example
    -------
    >>> check_schema({"history": "abc"}, {"history": ListOf(dict)}, path="metrics.json")
    Traceback (most recent call last):
    ...
    ValueError: 'metrics.json': field history must be a list, got 'abc'
    """
    def fail(message: str):
        raise ValueError(f"{_label(path, what)}: {_field(where)} {message}")

    def sub(item, item_schema, key):
        check_schema(item, item_schema, path=path, what=what, where=_join(where, key))

    if isinstance(schema, Optional):
        if value is None:
            return
        if not isinstance(schema.schema, (Optional, OneOf)) and not _is(value, _kind(schema.schema)):
            fail(f"must be {_noun(schema)}, got {_shown(value)}")
        schema = schema.schema  # a value of the right kind: the inner schema's message is better
    if isinstance(schema, OneOf):
        if not any(type(value) is type(c) and value == c for c in schema.choices):
            fail(f"must be {_noun(schema)}, got {_shown(value)}")
        return
    if not _is(value, _kind(schema)):
        fail(f"must be {_noun(schema)}, got {_shown(value)}")
    if isinstance(schema, ListOf):
        for i, item in enumerate(value):
            sub(item, schema.schema, i)
    elif isinstance(schema, DictOf):
        for key, item in value.items():
            if isinstance(schema.keys, OneOf) and key not in schema.keys.choices:
                fail(f"has the key {key!r}; its keys must be {_noun(schema.keys)}")
            sub(item, schema.schema, key)
    elif isinstance(schema, (dict, Object)):
        fields = schema if isinstance(schema, dict) else schema.fields
        for key, field_schema in fields.items():
            if key in value:
                sub(value[key], field_schema.schema if isinstance(field_schema, NotRequired)
                    else field_schema, key)
            elif not isinstance(field_schema, NotRequired):
                fail(f"lacks the field {key!r}")
        extra = [] if getattr(schema, "extra_keys_allowed", True) else sorted(set(value) - set(fields))
        if extra:
            fail(f"has the unexpected field {extra[0]!r}; expected: {', '.join(fields)}")
