"""A damaged run directory is refused in one line, and no command touches a file it was not asked to.

One finished tiny run with a validation split (so it has ``best.pt``) is damaged at random:
one of its files (config.json, metrics.json, checkpoint.pt, best.pt, test_per_example.npz)
is truncated, has bits flipped, has a span replaced by random bytes or random bytes appended,
is deleted, or (JSON files) has one value replaced by a string, a list, null, an object, a
boolean, a number too large for a float, NaN, a 10,000-deep list, or has a key deleted. Then
every command that reads a run runs on its own fresh copy of the damaged directory:

    evaluate RUN --samples 3              plot RUN --kind samples --out X.png
    sample RUN --n 4 --out Y.png          report RUN --out Z.html
    train --resume RUN --epochs 3         compare --runs RUN --out OUT

Each must exit 0 or 2; on failure print at most one non-empty line on stderr, starting with
``pyro-vae: error:``; never a traceback. And no command deletes or rewrites a file it was not
asked to: ``evaluate`` may rewrite ``metrics.json`` and ``test_per_example.npz``, and
``resume`` its run files and figures, only when they succeed; ``plot``, ``sample``, ``report``
and ``compare`` write only their ``--out``. (The lock file is not compared: it only names its
holder.)
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import main

EPOCHS = 2
TRAIN = ["--epochs", str(EPOCHS), "--no-progress", "--hidden-dims", "16", "--latent-dim", "2",
         "--eval-samples", "3", "--device", "cpu", "--subset", "256", "--batch-size", "64",
         "--val-fraction", "0.2"]
FILES = ("config.json", "metrics.json", "checkpoint.pt", "best.pt", "test_per_example.npz")
JSON_FILES = ("config.json", "metrics.json")

#: name -> (argv with RUN and OUT placeholders, files in the run it may change when it succeeds)
RUN_FILES = {"config.json", "metrics.json", "checkpoint.pt", "best.pt", "test_per_example.npz"}
COMMANDS = {
    "evaluate": (["evaluate", "RUN", "--samples", "3"], {"metrics.json", "test_per_example.npz"}),
    "plot": (["plot", "RUN", "--kind", "samples", "--out", "OUT/x.png"], set()),
    "sample": (["sample", "RUN", "--n", "4", "--out", "OUT/y.png"], set()),
    "report": (["report", "RUN", "--out", "OUT/z.html"], set()),
    "resume": (["train", "--resume", "RUN", "--epochs", str(EPOCHS + 1), "--no-progress"], RUN_FILES),
    "compare": (["compare", "--runs", "RUN", "--out", "OUT/compared"], set()),
}
#: Files a successful resume may also add or rewrite besides RUN_FILES (figures, training logs).
RESUME_EXTRAS = ("figures/", "log.csv", "tensorboard/", "report.html")

SETTINGS = settings(max_examples=24, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is slow
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

OUTCOMES: collections.Counter = collections.Counter()



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("corruption") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--out", str(run), *TRAIN]) == 0
    finally:
        torch.set_num_threads(before)
    for name in FILES:
        assert (run / name).is_file(), name
    return run


# ------------------------------------------------------------------ damage


def _json_paths(value, prefix=()):
    """Every node of a JSON document, as a path of keys and indices (the root is ())."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_paths(item, (*prefix, i))


_MARK = "__pyro_vae_test_replacement__"
#: JSON text put in place of a value (written as text: some are not what json.dumps writes).
REPLACEMENTS = {
    "string": '"corrupted"',
    "list": "[1, 2, 3]",
    "null": "null",
    "object": '{"a": 1}',
    "boolean": "true",
    "huge int": "1" + "0" * 400,
    "huge float": "1e400",
    "negative huge float": "-1e400",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "negative": "-7",
    "float for an integer": "2.0",
    "empty string": '""',
    "deep list": "[" * 10000 + "]" * 10000,
}


def edit_json(text: str, path: tuple, edit: str) -> str:
    doc = json.loads(text)
    if not path:  # the whole document
        return "{}" if edit == "delete key" else REPLACEMENTS[edit]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if edit == "delete key":
        del parent[path[-1]]
        return json.dumps(doc, indent=2)
    parent[path[-1]] = _MARK
    return json.dumps(doc, indent=2).replace(json.dumps(_MARK), REPLACEMENTS[edit])


@st.composite
def damage(draw, run: Path):
    """(file, description, new bytes or None for a deletion)."""
    name = draw(st.sampled_from(FILES))
    data = (run / name).read_bytes()
    kinds = ["truncate", "flip bits", "random span", "append", "random file", "delete"]
    if name in JSON_FILES:
        kinds += ["json edit"] * 4  # the most interesting kind for the readers of JSON
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate":
        keep = draw(st.integers(0, len(data) - 1))
        return name, f"truncate to {keep} bytes", data[:keep]
    if kind == "flip bits":
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)),
                              min_size=1, max_size=8))
        damaged = bytearray(data)
        for at, bit in flips:
            damaged[at] ^= 1 << bit
        return name, f"flip bits {flips}", bytes(damaged)
    if kind == "random span":
        at = draw(st.integers(0, len(data) - 1))
        span = draw(st.binary(min_size=1, max_size=64))
        return name, f"replace bytes {at}.. with {span!r}", data[:at] + span + data[at + len(span):]
    if kind == "append":
        tail = draw(st.binary(min_size=1, max_size=64))
        return name, f"append {tail!r}", data + tail
    if kind == "random file":
        junk = draw(st.binary(max_size=128))
        return name, f"replace with {junk!r}", junk
    if kind == "delete":
        return name, "delete", None
    paths = list(_json_paths(json.loads(data)))
    path = draw(st.sampled_from(paths))
    edits = list(REPLACEMENTS) + (["delete key"] if path else [])
    edit = draw(st.sampled_from(edits))
    return name, f"json: {edit} at {list(path)}", edit_json(data.decode(), path, edit).encode()


# ------------------------------------------------------------------ commands


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def run_command(argv) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main([str(a) for a in argv])
    return status, err.getvalue()


def _may_change(command: str, name: str) -> bool:
    allowed = COMMANDS[command][1]
    return name in allowed or (command == "resume" and name.startswith(RESUME_EXTRAS))


def check_command(command: str, template: Path, work: Path, what: str) -> None:
    run = Path(shutil.copytree(template, work / "run"))
    out = work / "out"
    out.mkdir()
    argv = [str(run) if a == "RUN" else a.replace("OUT", str(out)) for a in COMMANDS[command][0]]
    before = snapshot(run)
    try:
        status, err = run_command(argv)
    except BaseException as exc:  # a traceback: fail with the damage that caused it
        raise AssertionError(f"{command} on a run with {what}: raised {type(exc).__name__}: {exc}") from exc
    lines = [line for line in err.splitlines() if line.strip()]
    context = f"{command} on a run with {what}: status {status}, stderr {lines[-3:]}"
    assert "Traceback" not in err, context
    assert status in (0, 2), context
    after = snapshot(run)
    if status == 2:
        OUTCOMES[f"{command} refused"] += 1
        event(f"{command} refused")
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), context
        assert after == before, f"{context}: changed {sorted(_changed(before, after))}"
        if command in ("plot", "sample", "report"):
            assert not any(out.iterdir()), f"{context}: left {sorted(p.name for p in out.iterdir())}"
        return
    OUTCOMES[f"{command} succeeded"] += 1
    event(f"{command} succeeded")
    changed = _changed(before, after)
    deleted = sorted(set(before) - set(after))
    assert not deleted, f"{context}: deleted {deleted}"
    assert all(_may_change(command, n) for n in changed), f"{context}: changed {sorted(changed)}"
    if command in ("plot", "sample", "report"):
        assert any(out.iterdir()), f"{context}: wrote no --out"


def _changed(before: dict, after: dict) -> set:
    return {n for n in set(before) | set(after) if before.get(n) != after.get(n)}


@pytest.fixture
def reset_outcomes():
    OUTCOMES.clear()
    yield OUTCOMES


def test_damaged_run_directories_are_refused_in_one_line_and_left_as_they_were(finished_run, reset_outcomes):
    @SETTINGS
    @given(st.data())
    def property_(data):
        name, what, damaged = data.draw(damage(finished_run), label="damage")
        what = f"{name} damaged ({what[:200]})"
        with tempfile.TemporaryDirectory() as scratch:
            template = Path(shutil.copytree(finished_run, Path(scratch) / "template"))
            if damaged is None:
                (template / name).unlink()
            else:
                (template / name).write_bytes(damaged)
            for i, command in enumerate(COMMANDS):
                work = Path(scratch) / f"{i}-{command}"
                work.mkdir()
                check_command(command, template, work, what)

    property_()
    # the examples are derandomized, so these counts are fixed; they keep the test honest
    refused = sum(v for k, v in reset_outcomes.items() if k.endswith("refused"))
    succeeded = sum(v for k, v in reset_outcomes.items() if k.endswith("succeeded"))
    assert refused >= 40 and succeeded >= 20, dict(reset_outcomes)
    for command in COMMANDS:
        assert reset_outcomes[f"{command} refused"] >= 3, dict(reset_outcomes)
