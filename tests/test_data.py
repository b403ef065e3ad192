import pytest
import torch

from pyro_vae.data import DataConfig, iterate_batches, load_dataset


def test_digits_split_is_fixed_and_complete(digits):
    again = load_dataset(DataConfig("digits"))
    assert digits.image_shape == (1, 8, 8)
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert digits.y_train.shape == (1438,) and digits.num_classes == 10
    torch.testing.assert_close(digits.x_test, again.x_test)  # same seed, same binarized test set
    torch.testing.assert_close(digits.y_train, again.y_train)
    other = load_dataset(DataConfig("digits", split_seed=1))
    assert not torch.equal(other.y_test, digits.y_test)


def test_test_set_binarized_once_training_kept_grey(digits):
    assert set(digits.x_test.unique().tolist()) == {0.0, 1.0}
    assert digits.x_train.unique().numel() == 17  # grey levels 0/16 .. 16/16, binarized per batch
    grey = load_dataset(DataConfig("digits", binarize="none"))
    assert grey.x_test.unique().numel() > 2 and float(grey.x_test.max()) <= 1.0
    static = load_dataset(DataConfig("digits", binarize="static"))
    assert set(static.x_train.unique().tolist()) == {0.0, 1.0}


def test_dynamic_binarization_draws_fresh_pixels_each_epoch(digits):
    torch.manual_seed(0)
    first = torch.cat([x for x, _ in digits.train_batches(500, shuffle=False)])
    second = torch.cat([x for x, _ in digits.train_batches(500, shuffle=False)])
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    # Each pixel is Bernoulli(grey level): the binarized mean matches the grey mean closely.
    assert abs(first.mean().item() - digits.x_train.mean().item()) < 0.01


def test_batches_cover_every_example_once():
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.arange(10)
    seen = [(xb, yb) for xb, yb in iterate_batches(x, y, 3)]
    assert [len(yb) for _, yb in seen] == [3, 3, 3, 1]
    xs = torch.cat([xb for xb, _ in seen]).squeeze(1)
    ys = torch.cat([yb for _, yb in seen])
    assert sorted(ys.tolist()) == list(range(10))
    torch.testing.assert_close(xs, ys.double().float())  # labels travel with their examples


def test_to_moves_and_casts_only_pixels(digits):
    moved = digits.to(dtype=torch.float64)
    assert moved.x_train.dtype == torch.float64 and moved.y_train.dtype == torch.int64
    assert digits.x_train.dtype == torch.float32  # the original is unchanged


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "nope"}, "unknown dataset 'nope'"),
    ({"binarize": "sometimes"}, "unknown binarize 'sometimes'"),
    ({"test_fraction": 1.5}, "test_fraction must be in"),
    ({"subset": 0}, "subset must be a positive integer"),
])
def test_bad_data_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)
