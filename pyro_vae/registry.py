"""One registry type for every kind of plug-in, and the loading of users' plug-ins.

A :class:`Registry` maps names to what they build (model, prior, likelihood, guide and
objective classes or factories, data sources). It is a ``dict``, so ``PRIORS["laplace"] =
LaplacePrior`` works, and adds :meth:`Registry.register` (a decorator), :meth:`Registry.get`
(an unknown name lists the choices) and the provenance of each name: which plug-in file or
module registered it, so a run directory can record what it used. This module imports
nothing else of the package.

Plug-ins are Python files or modules that register names when imported:

- ``load_plugin("path/to/my_priors.py")`` or ``load_plugin("my_package.priors")`` (the CLI's
  ``--plugin``); loading runs that code, by design: it is the user's own;
- installed packages declare a module in the entry-point group ``pyro_vae.plugins``; those
  are imported the first time a registry is asked for its names.

A run records each plug-in it used (module name, or absolute file path and SHA-256). Reading
the run later imports a recorded *module* if it is installed, but runs a recorded *file*
only if this user named that very file (same SHA-256) with ``--plugin`` before: such files
are remembered in a trust list (``$PYRO_VAE_HOME/trusted-plugins.json``, default
``~/.pyro-vae``). A run copied from someone else therefore never runs code by being
evaluated; ``--plugin FILE`` or ``--trust-run`` says that it may.

Example
-------
>>> from pyro_vae.registry import Registry
>>> SHAPES = Registry("shape")
>>> @SHAPES.register("square")
... class Square:
...     pass
>>> SHAPES.get("square") is Square
True
>>> SHAPES.get("circle")
Traceback (most recent call last):
...
ValueError: unknown shape 'circle'; choose from: square
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

#: Entry-point group of installed plug-in packages.
ENTRY_POINT_GROUP = "pyro_vae.plugins"

_REGISTRIES: dict[str, Registry] = {}
_LOADED: dict[str, dict] = {}  # plug-in key (path or module) -> its record
_loading: list[dict] = []  # the plug-in being imported (registrations are credited to it)
_discovered = False


class Registry(dict):
    """Names of one kind of plug-in (``"prior"``, ``"guide"`` ...) mapped to what builds them."""

    def __init__(self, kind: str, entries: dict | None = None):
        super().__init__(entries or {})
        self.kind = kind
        self._provenance: dict[str, dict | None] = {}
        _REGISTRIES[kind] = self

    def register(self, name: str, obj=None, *, replace: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so.

        A name registered twice is refused unless ``replace``: two plug-ins claiming one name
        would make a run's meaning depend on their import order.
        """
        if not isinstance(name, str) or not name or "," in name or ":" in name:
            raise ValueError(f"{self.kind} names must be non-empty strings without ',' or ':', got {name!r}")

        def add(target):
            if name in dict.keys(self) and not replace and dict.__getitem__(self, name) is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered (by "
                                 f"{_describe(self._provenance.get(name))}); pass replace=True to replace it")
            dict.__setitem__(self, name, target)
            self._provenance[name] = _loading[-1] if _loading else None
            return target

        return add if obj is None else add(obj)

    def __setitem__(self, name, obj):  # PRIORS["laplace"] = LaplacePrior: a registration
        self.register(name, obj, replace=True)

    def get(self, name, default=None):
        """What ``name`` builds; ``ValueError`` listing the choices for an unknown name."""
        _discover_entry_points()
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        if default is not None:
            return default
        raise ValueError(f"unknown {self.kind} {name!r}; choose from: {', '.join(sorted(self))}")

    def provenance(self, name: str) -> dict | None:
        """The record of the plug-in that registered ``name`` (None: built in)."""
        return self._provenance.get(name)

    def __contains__(self, name) -> bool:
        _discover_entry_points()
        return dict.__contains__(self, name)

    def __iter__(self):
        _discover_entry_points()
        return dict.__iter__(self)


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (``model``, ``prior``, ``likelihood``, ``guide``, ``objective``...)."""
    if kind not in _REGISTRIES:
        raise ValueError(f"unknown plug-in kind {kind!r}; choose from: {', '.join(sorted(_REGISTRIES))}")
    return _REGISTRIES[kind]


def register(kind: str, name: str):
    """Decorator registering a class or factory under ``name`` in the registry of ``kind``.

    Example
    -------
    >>> from pyro_vae.registry import Registry, register
    >>> COLOURS = Registry("colour")
    >>> @register("colour", "red")
    ... class Red:
    ...     pass
    >>> COLOURS.get("red") is Red
    True
    """
    return registry(kind).register(name)


def _describe(record: dict | None) -> str:
    if record is None:
        return "pyro-vae"
    return f"plug-in file {record['path']}" if "path" in record else f"plug-in module {record['module']}"


def _discover_entry_points() -> None:
    """Import the modules installed packages declare in ``pyro_vae.plugins`` (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        load_plugin(point.value.split(":")[0])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_plugin(spec: str, *, remember: bool = True) -> dict:
    """Import the plug-in ``spec`` (a ``.py`` file or a module name) and return its record.

    The record is ``{"path": ABSOLUTE_PATH, "sha256": ...}`` for a file and ``{"module": NAME}``
    for a module; what the plug-in registers is credited to it. Loading a file also adds it
    to the trust list (``remember``), so runs that used it can be read later without naming it
    again; a file loaded for ``--trust-run`` is not remembered.
    Raises ``ValueError`` (one line) for a missing file or module, or code that fails.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"plugin must name a .py file or a module, got {spec!r}")
    is_file = spec.endswith(".py") or os.sep in spec or Path(spec).is_file()
    record = _file_record(spec) if is_file else {"module": spec}
    key = record.get("path", record.get("module"))
    same_code = [r for r in _LOADED.values() if is_file and r.get("sha256") == record["sha256"]]
    if same_code:  # the same file, copied or moved: its code has run once already
        return same_code[0]
    if key in _LOADED:
        if _LOADED[key] != record:
            raise ValueError(f"plugin {spec!r} changed on disk since this process loaded it "
                             f"(SHA-256 {_LOADED[key]['sha256'][:12]}… then, {record['sha256'][:12]}… now)")
        return record
    _loading.append(record)
    try:
        if is_file:
            name = f"pyro_vae_plugin_{record['sha256'][:16]}"
            module_spec = importlib.util.spec_from_file_location(name, record["path"])
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if not is_file and err.name and spec.startswith(err.name):
            raise ValueError(f"plugin module {spec!r} cannot be imported (no module named "
                             f"{err.name!r}); give a .py file or an installed module") from None
        raise ValueError(f"plugin {spec!r} failed to load: {type(err).__name__}: {err}") from err
    except Exception as err:  # noqa: BLE001  (the user's code may raise anything)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"plugin {spec!r} failed to load: {type(err).__name__}: {first}") from err
    finally:
        _loading.pop()
    _LOADED[key] = record
    if is_file and remember:
        _trust(record)
    return record


def _file_record(spec: str) -> dict:
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"plugin file {spec!r} does not exist")
    if path.suffix != ".py":
        raise ValueError(f"plugin file {spec!r} must be a Python source file ending in .py")
    try:
        return {"path": str(path), "sha256": sha256_of(path)}
    except OSError as err:
        raise ValueError(f"plugin file {spec!r} could not be read ({err.strerror})") from err


def plugins_used(names: dict[str, str]) -> list[dict]:
    """Records of the plug-ins that registered ``names`` (kind -> name), without repeats."""
    records = []
    for kind, name in names.items():
        reg = _REGISTRIES.get(kind)
        record = reg.provenance(name) if reg is not None and name is not None else None
        if record is not None and record not in records:
            records.append(record)
    return records


# --------------------------------------------------------------------------- trust list


def trust_file() -> Path:
    """Where the files a user named with ``--plugin`` are remembered."""
    home = os.environ.get("PYRO_VAE_HOME") or os.path.join(os.path.expanduser("~"), ".pyro-vae")
    return Path(home) / "trusted-plugins.json"


def _trusted() -> list[dict]:
    try:
        entries = json.loads(trust_file().read_text())
    except (OSError, ValueError):
        return []  # none yet, or unreadable: nothing is trusted
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _trust(record: dict) -> None:
    entries = _trusted()
    if record in entries:
        return
    path = trust_file()
    with contextlib.suppress(OSError):  # a read-only home only means naming files again
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trusted-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(entries + [record], handle, indent=1)
        os.replace(tmp, path)


def load_recorded_plugins(records, *, where: str, trust: bool = False) -> None:
    """Make the plug-ins a run recorded available before its config is read.

    Modules are imported when installed. A file is run only if it is already loaded, or this
    user named it before (the trust list) or ``trust`` is set (``--trust-run``); its SHA-256
    must match the recorded one. Anything else is one ``ValueError`` naming the file.
    """
    if not isinstance(records, list):
        raise ValueError(f"{where}: 'plugins' must be a list, got {type(records).__name__}")
    for record in records:
        if not isinstance(record, dict) or not (
                isinstance(record.get("module"), str) or
                (isinstance(record.get("path"), str) and isinstance(record.get("sha256"), str))):
            raise ValueError(f"{where}: a plug-in record must be {{'module': NAME}} or "
                             f"{{'path': FILE, 'sha256': HEX}}, got {record!r}")
        if "module" in record:
            if record["module"] not in _LOADED and record["module"] not in sys.modules:
                load_plugin(record["module"])
            continue
        path = record["path"]
        if any(loaded.get("sha256") == record["sha256"] for loaded in _LOADED.values()):
            continue  # loaded, here or (moved) under another path the user named
        if not Path(path).is_file():
            raise ValueError(f"{where} was trained with the plug-in file {path!r}, which is missing; "
                             f"restore it, or pass --plugin with the file's new place")
        now = sha256_of(Path(path))
        if now != record["sha256"]:
            raise ValueError(f"{where} was trained with the plug-in file {path!r}, which has changed "
                             f"since (SHA-256 {record['sha256'][:12]}… then, {now[:12]}… now)")
        if not (trust or record in _trusted()):
            raise ValueError(f"{where} was trained with the plug-in file {path!r}, which runs code "
                             f"when loaded and was never loaded by you: pass --plugin {path} (or "
                             f"--trust-run) to run it")
        load_plugin(path, remember=False)  # named by the user before, or trusted for this command only
