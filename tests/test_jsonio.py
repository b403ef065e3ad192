"""pyro_vae.jsonio: finite JSON out, checked JSON in, schema errors that name the field."""

import json
import math

import numpy as np
import pytest

from pyro_vae.jsonio import (
    DictOf,
    Finite,
    ListOf,
    NotRequired,
    Object,
    OneOf,
    Optional,
    check_schema,
    dumps_finite,
    loads_checked,
    read_json_file,
)

METRICS = {
    "model": "vae",
    "epochs": 2,
    "seconds": 1.5,
    "history": [{"epoch": 1, "train_elbo": -120.25}, {"epoch": 2, "train_elbo": -110.0}],
    "test": {"elbo": -105.5, "elbo_stderr": 0.25, "latent": {"kl_per_dim": [0.5, 1e-300]}},
    "flags": [True, False, None],
    "unicode": "é ∑ 😀",
}

METRICS_SCHEMA = {
    "model": OneOf("vae", "cvae"),
    "epochs": int,
    "seconds": Finite,
    "history": ListOf({"epoch": int, "train_elbo": float}),
    "test": Optional({"elbo": float, "elbo_stderr": Optional(float),
                      "latent": NotRequired(DictOf(ListOf(float)))}),
}


# --- writing ---------------------------------------------------------------------------------

def test_round_trip_is_exact():
    text = dumps_finite(METRICS)
    assert loads_checked(text, path="m.json") == METRICS
    assert loads_checked(text.encode("utf-8"), path="m.json") == METRICS
    assert json.loads(text) == METRICS  # plain JSON: any reader gets the same


def test_tuples_and_numpy_scalars_become_plain_json():
    text = dumps_finite({"a": (1, 2), "b": np.float32(0.5), "c": np.int64(3), "d": np.bool_(True)},
                        indent=None)
    assert text == '{"a": [1, 2], "b": 0.5, "c": 3, "d": true}'


@pytest.mark.parametrize("bad, shown", [(float("nan"), "nan"), (float("inf"), "inf"),
                                        (float("-inf"), "-inf"), (np.float64("nan"), "nan")])
def test_nonfinite_refused_with_its_path(bad, shown):
    obj = {"history": [{"epoch": 1}, {"epoch": 2, "train_elbo": bad}], "test": {"elbo": 1.0}}
    with pytest.raises(ValueError, match=rf"^cannot write JSON: field history\[1\]\.train_elbo "
                                         rf"is {shown}, and JSON holds no NaN or Infinity$"):
        dumps_finite(obj)


def test_nonfinite_null_writes_null_and_keeps_the_rest():
    obj = {"test": {"elbo": -90.0, "elbo_stderr": float("nan")}, "xs": [float("inf"), 2.0]}
    back = json.loads(dumps_finite(obj, nonfinite="null"))
    assert back == {"test": {"elbo": -90.0, "elbo_stderr": None}, "xs": [None, 2.0]}
    assert obj["test"]["elbo_stderr"] != obj["test"]["elbo_stderr"]  # the input is not changed


def test_nonfinite_policy_is_checked():
    with pytest.raises(ValueError, match="unknown nonfinite 'zero'; choose from: null, raise"):
        dumps_finite({}, nonfinite="zero")


def test_values_json_cannot_hold_are_refused():
    with pytest.raises(TypeError, match=r"field a\[0\] is a ndarray, not a JSON value"):
        dumps_finite({"a": [np.zeros(2)]})
    with pytest.raises(TypeError, match="field a has the non-string key 1"):
        dumps_finite({"a": {1: "x"}})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        dumps_finite(loop)


# --- reading ---------------------------------------------------------------------------------

def test_deep_nesting_refused_without_recursion_error():
    for text in ("[" * 200_000, "[" * 200_000 + "]" * 200_000, '{"a":' * 100_000):
        with pytest.raises(ValueError, match=r"^'deep\.json' is nested \d+ deep, more than the 64"):
            loads_checked(text, path="deep.json")
    # Brackets inside strings are not nesting; 64 real levels are accepted.
    assert loads_checked('["' + "[" * 1000 + '"]', path="s.json") == ["[" * 1000]
    assert loads_checked("[" * 64 + "]" * 64, path="ok.json") is not None
    with pytest.raises(ValueError, match="nested 65 deep"):
        loads_checked("[" * 65 + "]" * 65, path="deep.json")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nonfinite_literals_refused(literal):
    with pytest.raises(ValueError, match=rf"^'m\.json' holds {literal}, which is not JSON"):
        loads_checked(f'{{"test": {{"elbo": {literal}}}}}', path="m.json")


def test_overflowing_number_refused():
    with pytest.raises(ValueError, match="holds the number 1e999, too large for a float"):
        loads_checked("[1e999]", path="m.json")


def test_bad_utf8_refused():
    with pytest.raises(ValueError, match=r"^'m\.json' is not valid UTF-8 \(byte 0xff at offset 9\)$"):
        loads_checked(b'{"model":\xff}', path="m.json")


@pytest.mark.parametrize("text, problem", [
    ("", "is empty, not JSON"), ("  \n", "is empty, not JSON"),
    ('{"a": 1,}', r"is not valid JSON \(Expecting property name"),
    ('{"a": 1} x', r"is not valid JSON \(Extra data"),
    ('"abc', r"is not valid JSON \(Unterminated string"),
    ("1" * 5000, "is not readable JSON"),
])
def test_invalid_json_is_one_line(text, problem):
    with pytest.raises(ValueError, match=rf"^metrics file 'm\.json' {problem}") as info:
        loads_checked(text, path="m.json", what="metrics file")
    assert "\n" not in str(info.value)


def test_duplicate_keys_refused_unless_allowed():
    with pytest.raises(ValueError, match="has the key 'epochs' twice in one object"):
        loads_checked('{"x": {"epochs": 1, "epochs": 2}}', path="m.json")
    assert loads_checked('{"epochs": 1, "epochs": 2}', path="m.json", duplicate_keys=True) == {"epochs": 2}


def test_size_limit():
    with pytest.raises(ValueError, match="is 12 bytes, more than the 10 accepted"):
        loads_checked(b"[1, 2, 3, 4]", path="m.json", max_bytes=10)


def test_read_json_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(dumps_finite(METRICS))
    assert read_json_file(path, what="metrics file") == METRICS
    with pytest.raises(ValueError, match=r"^metrics file '.*missing\.json' could not be read "
                                         r"\(No such file or directory\)$"):
        read_json_file(tmp_path / "missing.json", what="metrics file")
    with pytest.raises(ValueError, match="could not be read"):
        read_json_file(tmp_path, what="metrics file")  # a directory
    with pytest.raises(ValueError, match=r"is \d+ bytes, more than the 50 accepted"):
        read_json_file(path, what="metrics file", max_bytes=50)
    path.write_bytes(b'{"epochs": NaN}')
    with pytest.raises(ValueError, match=r"^metrics file '.*metrics\.json' holds NaN"):
        read_json_file(path, what="metrics file")
    path.write_bytes(b'["\xe9t\xe9"]')  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"^'.*metrics\.json' is not valid UTF-8 \(byte 0xe9 at offset 2\)$"):
        read_json_file(path)


def test_read_json_file_permission_denied(tmp_path, monkeypatch):
    """Simulated the way the CLI tests do it (root reads anything): through Path.read_text."""
    path = tmp_path / "config.json"
    path.write_text("{}")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_text", denied)
    with pytest.raises(ValueError, match=r"config\.json' could not be read \(Permission denied\)$"):
        read_json_file(path, what="run configuration")


# --- schemas ---------------------------------------------------------------------------------

def test_schema_accepts_what_the_writer_writes():
    check_schema(loads_checked(dumps_finite(METRICS), path="m.json"), METRICS_SCHEMA, path="m.json")
    check_schema({**METRICS, "test": None}, METRICS_SCHEMA, path="m.json")  # Optional
    check_schema({**METRICS, "test": {"elbo": 1, "elbo_stderr": None}}, METRICS_SCHEMA,
                 path="m.json")  # NotRequired latent absent, int accepted as float


def _refused(value, schema=METRICS_SCHEMA):
    with pytest.raises(ValueError) as info:
        check_schema(value, schema, path="/run/metrics.json", what="metrics file")
    message = str(info.value)
    assert message.startswith("metrics file '/run/metrics.json': ") and "\n" not in message
    return message.split(": ", 1)[1]


def test_schema_errors_name_the_field():
    history = [{"epoch": i, "train_elbo": -1.0} for i in range(5)]
    history[3]["epoch"] = "abc"
    assert _refused({**METRICS, "history": history}) == \
        "field history[3].epoch must be an integer, got 'abc'"
    assert _refused({**METRICS, "epochs": True}) == "field epochs must be an integer, got true"
    assert _refused({**METRICS, "epochs": 2.0}) == "field epochs must be an integer, got 2.0"
    assert _refused({**METRICS, "seconds": math.nan}) == "field seconds must be a finite number, got nan"
    assert _refused({**METRICS, "model": "gan"}) == 'field model must be one of "vae", "cvae", got \'gan\''
    assert _refused({**METRICS, "test": [1]}) == \
        "field test must be null or a JSON object, got a list of 1 items"
    assert _refused({**METRICS, "test": {"elbo": "x", "elbo_stderr": 1.0}}) == \
        "field test.elbo must be a number, got 'x'"
    assert _refused({**METRICS, "test": {"elbo": 1.0, "elbo_stderr": 1.0,
                                         "latent": {"kl per dim": [1, "a"]}}}) == \
        "field test.latent['kl per dim'][1] must be a number, got 'a'"
    missing = dict(METRICS)
    del missing["epochs"]
    assert _refused(missing) == "the top level lacks the field 'epochs'"
    assert _refused([METRICS]) == "the top level must be a JSON object, got a list of 1 items"


def test_history_that_is_a_string_is_refused():
    assert _refused({**METRICS, "history": "epoch 1: -120"}) == \
        "field history must be a list, got 'epoch 1: -120'"


def test_extra_keys_policy_and_dict_keys():
    strict = Object({"a": int, "b": NotRequired(str)}, extra_keys_allowed=False)
    check_schema({"a": 1}, strict, path="c.json")
    check_schema({"a": 1, "zzz": 2}, {"a": int}, path="c.json")  # a plain dict allows extras
    assert _refused({"a": 1, "zzz": 2}, strict) == \
        "the top level has the unexpected field 'zzz'; expected: a, b"
    keyed = DictOf(int, keys=OneOf("train", "test"))
    check_schema({"train": 1, "test": 2}, keyed, path="c.json")
    assert _refused({"val": 1}, keyed) == "the top level has the key 'val'; its keys must be one of " \
                                          '"train", "test"'
    assert _refused({"flag": 1}, {"flag": OneOf(True)}) == "field flag must be one of true, got 1"


def test_a_schema_that_is_not_one_is_a_type_error():
    with pytest.raises(TypeError, match=r"\[1, 2\] is not a schema"):
        check_schema(1, [1, 2], path="c.json")
    with pytest.raises(TypeError, match="is not a schema"):
        check_schema({"a": 1}, {"a": "int"}, path="c.json")
    check_schema(None, type(None), path="c.json")
