"""benchmarks/m2_semisupervised.py in its --smoke mode (digits, 2 epochs): it runs, prints the
table and writes a JSON result with both test accuracies. Its numbers mean nothing at this size;
the full measurement (Fashion-MNIST, 1,000 labels) is run by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark module, imported from its file (it imports its neighbour ``common``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = {name: sys.modules.get(name) for name in ("common", "m2_semisupervised")}
    spec = importlib.util.spec_from_file_location("m2_semisupervised", BENCHMARKS / "m2_semisupervised.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    for name, old in before.items():  # leave no ``common`` behind for other tests to trip on
        if old is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = old



def test_smoke_run_prints_both_rows_and_writes_the_json(bench, tmp_path, capsys):
    path = tmp_path / "m2.json"
    returned = bench.main(["--smoke", "--json", str(path)])
    record = json.loads(path.read_text())
    assert record == json.loads(json.dumps(returned))
    assert record["dataset"] == "digits" and record["smoke"] is True
    assert (record["labels_per_class"], record["labelled"], record["epochs"], record["alpha"]) == (10, 100, 2, 1.0)
    assert record["unlabelled"] == record["train_examples"] - 100 > 0
    for name in ("m2", "classifier"):
        row = record[name]
        assert 0 <= row["test_accuracy"] <= 1, (name, row)
        assert row["seconds"] >= 0 and row["epochs"] >= 1 and row["steps"] >= 1
    assert record["m2"]["epochs"] == 2
    holdout = record["classifier"]["holdout"]
    assert holdout["held_out_rows"] == 20 and 1 <= holdout["best_epoch"] <= holdout["max_epochs"]
    assert record["classifier"]["epochs"] == holdout["best_epoch"]
    assert 0 <= record["classifier"]["holdout_model_test_accuracy"] <= 1
    assert record["m2_minus_classifier"] == pytest.approx(
        record["m2"]["test_accuracy"] - record["classifier"]["test_accuracy"])
    assert record["m2_beats_classifier"] == (record["m2_minus_classifier"] > 0)
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in table if line.split() and line.split()[0] in ("m2", "classifier")}
    assert set(rows) == {"m2", "classifier"}
    assert rows["m2"][1] == rows["classifier"][1] == "100"  # the labels column
    assert float(rows["m2"][3]) == pytest.approx(record["m2"]["test_accuracy"], abs=1e-4)


def test_holdout_is_stratified_and_keeps_a_row_of_each_class(bench):
    y = torch.arange(4).repeat_interleave(torch.tensor([10, 5, 2, 1]))
    held = bench.stratified_holdout(y, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(y[held], minlength=4).tolist() == [2, 1, 1, 0]
    assert bool(torch.isin(torch.arange(4), y[~held]).all())


def test_bad_options_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--holdout", "1.5"])
    with pytest.raises(SystemExit):
        bench.main(["--hidden-dims", "a,b"])
