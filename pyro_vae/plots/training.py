"""Figures of training: the ELBO per epoch and the final log-likelihood.

Example
-------
>>> import io
>>> from pyro_vae.plots.training import plot_curves
>>> history = [{"epoch": 1, "train_elbo": -40.0, "test_elbo": -41.0},
...            {"epoch": 2, "train_elbo": -35.0, "test_elbo": -36.5}]
>>> plot_curves(history, io.BytesIO())                             # doctest: +ELLIPSIS
<_io.BytesIO object at ...>
"""

from __future__ import annotations

from .layout import DPI, new_figure, save


def plot_curves(history: list, path, metrics: dict | None = None):
    """Training curve and validation/test ELBO per epoch (nats per example); the final test
    log-likelihood if known; below them, where the history has it (``train_kl`` ...), the
    ELBO's KL term per epoch, in a panel of its own (the figure keeps its size).

    The training curve is labelled "training objective" when the run optimized something other
    than the ELBO (beta, KL warm-up, IWAE: the history key ``train_objective``).

    ``metrics`` is a run's ``metrics.json``: its ``test`` object adds the final importance-sampled
    (or exact) log-likelihood as a point at the last epoch. For a model without latent variables
    the "ELBO" is its exact log-likelihood, and the curve is labelled so.
    """
    fig = new_figure(600 / DPI, 400 / DPI)
    test = (metrics or {}).get("test") or {}
    # PPCA and mixtures: 0 throughout; a point mass (bound False): -log p(z*), not a KL
    kl_keys = [] if test.get("bound") is False else [
        key for key in ("train_kl", "val_kl", "test_kl") if any(h.get(key) not in (None, 0) for h in history)]
    ax = fig.add_axes([0.14, 0.13, 0.82, 0.78] if not kl_keys else [0.14, 0.40, 0.82, 0.52])
    epochs = [h["epoch"] for h in history]
    if history:
        if "train_objective" in history[0]:  # beta, warm-up or IWAE: not the ELBO
            key, name = "train_objective", "training objective (weighted or IWAE: not the ELBO)"
        else:  # a model without latents has an empty guide: its ELBO is its exact log-likelihood
            key, name = "train_elbo", "train log p(x) (exact ELBO)" if test.get("exact") else "train ELBO"
        ax.plot(epochs, [h[key] for h in history], label=name)
    for key, label in (("val_elbo", "validation ELBO"), ("val_bound", "validation IWAE bound (selects)"),
                       ("test_elbo", "test ELBO")):
        scored = [h for h in history if h.get(key) is not None]
        if scored:
            ax.plot([h["epoch"] for h in scored], [h[key] for h in scored], "o-", ms=3, label=label)
    best = (metrics or {}).get("best_epoch")
    if best is not None:
        ax.axvline(best, color="0.6", ls=":", lw=1, label=f"best validation epoch ({best})")
    logged = [h for h in history if h.get("test_log_likelihood") is not None]
    if logged:
        ax.plot([h["epoch"] for h in logged], [h["test_log_likelihood"] for h in logged], "s-", ms=3,
                label="test log p(x)")
    last = epochs[-1] if epochs else (metrics or {}).get("epochs", 0)
    if test.get("log_likelihood") is not None:
        how = "exact" if test.get("exact") else f"importance sampled, K={test.get('log_likelihood_samples')}"
        ax.plot([last], [test["log_likelihood"]], "*", ms=12, color="C3",
                label=f"final test log p(x) ({how}): {test['log_likelihood']:.2f}")
    if not history and not test:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch" if not kl_keys else "")
    ax.set_ylabel("nats per example")
    ax.set_title("training curve (higher is better)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7 if kl_keys else 8)
    ax.grid(alpha=0.3)
    if kl_keys:
        _plot_kl(fig.add_axes([0.14, 0.10, 0.82, 0.22], sharex=ax), history, kl_keys)
    return save(fig, path)


def _plot_kl(ax, history: list, keys: list) -> None:
    """The ELBO's KL term per epoch (unweighted: what beta and warm-up multiply)."""
    names = {"train_kl": "train", "val_kl": "validation", "test_kl": "test"}
    for i, key in enumerate(keys):
        scored = [h for h in history if h.get(key) is not None]
        style = "-" if key == "train_kl" else "o-"
        ax.plot([h["epoch"] for h in scored], [h[key] for h in scored], style, ms=3, color=f"C{i}",
                label=names[key])
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL term", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=len(keys), loc="best")
    ax.grid(alpha=0.3)
