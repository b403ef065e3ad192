"""Loggers: callbacks of :func:`pyro_vae.inference.fit` that write each epoch's numbers somewhere.

A :class:`Logger` receives the epoch's history record (training objective, validation or
test ELBO where evaluated, learning rate, gradient norm, KL weight where weighted) plus the
training seconds so far, and, at evaluation epochs, a grid of samples from the model.

- :class:`CSVLogger` writes ``log.csv``: one row per epoch, the header from the first row's
  keys, rewritten with more columns when a later row brings new keys.
- :class:`TensorBoardLogger` writes event files under ``tensorboard/`` (scalars per epoch,
  a ``samples`` image per evaluation epoch); it needs the optional ``tensorboard`` package
  (``pip install 'pyro-vae[tensorboard]'``).

Both resume: a run continued from the checkpoint of epoch k drops what it had logged past
epoch k (CSV: those rows; TensorBoard: events from step k + 1 on are purged), so a run killed
after logging an epoch but before checkpointing it has each epoch once.

Example
-------
>>> import tempfile
>>> from pyro_vae.data import DataConfig, load_dataset
>>> from pyro_vae.models import VAE, VAEConfig
>>> from pyro_vae.inference import TrainConfig, fit
>>> data = load_dataset(DataConfig("digits"))
>>> vae = VAE(data.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,)))
>>> log_dir = tempfile.mkdtemp()
>>> _ = fit(vae, data, TrainConfig(epochs=2, progress=False), callbacks=[CSVLogger(log_dir)])
>>> open(f"{log_dir}/log.csv").readline().split(",")[:2]
['epoch', 'train_elbo']
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..errors import check_choice
from ..runfiles import LOG_FILE as CSV_FILE  # where each writes in a run directory
from ..runfiles import TENSORBOARD_DIR
from .train import LOGGERS, Callback

#: Samples drawn for the image logged at each evaluation epoch (an 8 x 8 grid).
SAMPLE_GRID = 64


class MissingDependencyError(ImportError, ValueError):
    """An optional package a chosen feature needs is not installed (a ``ValueError`` too, so
    the command line reports it as one line)."""


def check_tensorboard() -> None:
    """Raise :class:`MissingDependencyError` unless the ``tensorboard`` package is importable."""
    if importlib.util.find_spec("tensorboard") is None:
        raise MissingDependencyError("log 'tensorboard' needs the tensorboard package, which is not "
                                     "installed; pip install 'pyro-vae[tensorboard]'")


class Logger(Callback, ABC):
    """A callback that writes each epoch's metrics; subclasses implement :meth:`log_metrics`.

    ``hyperparameters`` are logged once, at the start. With ``image_shape`` (C, H, W), each
    evaluation epoch (one whose record holds ``val_elbo`` or ``test_elbo``) also logs
    ``samples``: a grid of :data:`SAMPLE_GRID` draws (the likelihood's mean) of the model,
    drawn from a random stream of their own (seeded by ``seed`` and the epoch) so that
    logging never changes training. ``num_classes`` labels the draws of a model that needs
    labels (0, 1, ... in turn).
    """

    def __init__(self, *, hyperparameters: dict | None = None, image_shape=None,
                 num_classes: int | None = None, seed: int = 0):
        self.hyperparameters = hyperparameters
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.num_classes = num_classes
        self.seed = seed

    @abstractmethod
    def log_metrics(self, epoch: int, metrics: dict) -> None:
        """Write ``metrics`` (name -> number) of ``epoch``."""

    def log_hyperparameters(self, params: dict) -> None:
        """Write the run's settings (a JSON-able dict) once."""

    def log_image(self, tag: str, image: torch.Tensor, epoch: int) -> None:
        """Write ``image``, a ``(C, H, W)`` tensor with values in [0, 1]."""

    def start(self, epoch: int) -> None:
        """Prepare to log after ``epoch`` finished epochs (0: a new run; else a resume)."""

    def finalize(self) -> None:
        """Flush and close; called at the end of training and when it fails."""

    # ----------------------------------------------------------------- Callback hooks

    def on_train_start(self, model, state) -> None:
        self.start(state.epoch)
        if self.hyperparameters is not None and state.epoch == 0:
            self.log_hyperparameters(self.hyperparameters)

    def on_epoch_end(self, model, state) -> None:
        record = state.history[-1]
        self.log_metrics(state.epoch, {**record, "seconds": state.seconds})
        evaluated = "val_elbo" in record or "test_elbo" in record
        if evaluated and self.image_shape is not None and self.wants_images:
            self.log_image("samples", sample_grid(model, self.image_shape, self.num_classes,
                                                  seed=self.seed, epoch=state.epoch), state.epoch)

    def on_train_end(self, model, state) -> None:
        self.finalize()

    def on_exception(self, model, state, error) -> None:
        self.finalize()

    #: Whether :meth:`log_image` does something (drawing samples costs a forward pass).
    wants_images = False


@torch.no_grad()
def sample_grid(model, image_shape, num_classes: int | None = None, *, seed: int = 0,
                epoch: int = 0, n: int = SAMPLE_GRID) -> torch.Tensor:
    """``n`` draws of ``model`` (decoder means) as one ``(3, H', W')`` grid image in [0, 1].

    The draws come from a generator stream of their own, a function of ``(seed, epoch)``;
    torch's global stream (the one training draws from) is left where it was.
    """
    from torchvision.utils import make_grid  # noqa: PLC0415

    device = model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed((seed * 1_000_003 + epoch + 7) % 2**63)
        y = None
        if getattr(model, "needs_labels", False) and num_classes:
            y = torch.arange(n, device=device) % num_classes
        was_training = model.training
        model.eval()
        try:
            samples = model.sample(n, y, mean=True)  # (n, D)
        finally:
            model.train(was_training)
    images = samples.detach().to("cpu", torch.float32).reshape(n, *image_shape).clamp(0, 1)
    return make_grid(images, nrow=int(round(n ** 0.5)), padding=1, pad_value=1.0)


class CSVLogger(Logger):
    """``log_dir/log.csv``: one row per epoch (``epoch``, the record's keys, ``seconds``).

    Rows are appended as epochs end; a row with keys the header lacks (``val_elbo`` at the
    first evaluation epoch, say) rewrites the file with the longer header, earlier rows
    leaving those cells empty. Values are written with full precision.
    """

    def __init__(self, log_dir, **options):
        super().__init__(**options)
        self.path = Path(log_dir) / CSV_FILE
        self.fields: list[str] = []

    def start(self, epoch: int) -> None:
        self.fields = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if epoch == 0 or not self.path.is_file():
            self.path.unlink(missing_ok=True)  # a new run starts a new log
            return
        fields, rows = read_csv_log(self.path)
        kept = [row for row in rows if _epoch_of(row) is not None and _epoch_of(row) <= epoch]
        self.fields = fields
        self._rewrite(kept)

    def log_metrics(self, epoch: int, metrics: dict) -> None:
        new = [key for key in metrics if key not in self.fields]
        if new or not self.path.is_file():
            _, rows = read_csv_log(self.path) if self.path.is_file() else ([], [])
            self.fields = [*self.fields, *new]
            self._rewrite([*rows, metrics])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            csv.DictWriter(file, self.fields).writerow(metrics)
            file.flush()

    def _rewrite(self, rows: list) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())


def read_csv_log(path) -> tuple[list, list]:
    """The header and the complete rows of a CSV log (a last line cut short by a kill is dropped).

    A file that is not such a log (not UTF-8, not CSV, a header not starting with ``epoch``) is
    a ``ValueError`` naming it: resume appends to the log, so it must not merge a foreign file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        rows = [row for row in reader if None not in row]  # None: a row longer than the header
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{str(path)!r} is not a training log pyro-vae wrote ({err}); move it "
                         f"away to resume with --log csv") from err
    fields = list(reader.fieldnames or [])
    if fields and fields[0] != "epoch":
        raise ValueError(f"{str(path)!r} is not a training log pyro-vae wrote (its header starts "
                         f"with {fields[0]!r}, not 'epoch'); move it away to resume with --log csv")
    return fields, rows


def _epoch_of(row: dict) -> int | None:
    try:
        return int(row.get("epoch") or "")
    except ValueError:
        return None


class TensorBoardLogger(Logger):
    """Event files under ``log_dir`` (a run's ``tensorboard/``), read by ``tensorboard --logdir``.

    Scalars per epoch, tagged with the history's keys (``train_elbo`` or
    ``train_objective``, ``val_elbo`` or ``test_elbo``, ``lr``, ``grad_norm``, ``kl_weight``,
    ``seconds``), step = epoch; the settings as text (``config``); a ``samples`` image at
    each evaluation epoch. A resumed run purges events past its checkpoint's epoch.
    """

    wants_images = True

    def __init__(self, log_dir, **options):
        check_tensorboard()
        super().__init__(**options)
        self.log_dir = Path(log_dir)
        self.writer = None

    def start(self, epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

        # purge_step: TensorBoard drops what earlier sessions wrote at steps >= it.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=epoch + 1 if epoch else None)

    def log_hyperparameters(self, params: dict) -> None:
        text = json.dumps(params, indent=2, sort_keys=True, default=str)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # markdown code block

    def log_metrics(self, epoch: int, metrics: dict) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()  # a killed run keeps every epoch logged so far

    def log_image(self, tag: str, image: torch.Tensor, epoch: int) -> None:
        self.writer.add_image(tag, image, epoch)
        self.writer.flush()

    def finalize(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def build_loggers(names, run_dir, **options) -> list[Logger]:
    """The loggers ``names`` (from :data:`~pyro_vae.inference.train.LOGGERS`) writing into ``run_dir``.

    ``options`` go to every logger (``hyperparameters``, ``image_shape``, ``num_classes``,
    ``seed``). Raises :class:`MissingDependencyError` (a ``ValueError``) for ``tensorboard``
    without the package, before anything is written.

    Example
    -------
    >>> [type(logger).__name__ for logger in build_loggers(["csv"], "/tmp/run")]
    ['CSVLogger']
    """
    run_dir = Path(run_dir)
    loggers = []
    for name in names:
        check_choice("log", name, LOGGERS)
        if name == "csv":
            loggers.append(CSVLogger(run_dir, **options))
        else:
            loggers.append(TensorBoardLogger(run_dir / TENSORBOARD_DIR, **options))
    return loggers


__all__ = ["CSVLogger", "CSV_FILE", "Logger", "MissingDependencyError", "TENSORBOARD_DIR",
           "TensorBoardLogger", "build_loggers", "check_tensorboard", "read_csv_log", "sample_grid"]
