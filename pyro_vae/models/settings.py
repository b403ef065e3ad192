"""What the network models (VAE, CVAE, HVAE, M2) share: their common settings, checked in one
place, and the first steps of building one.

Each of their configs has its own fields (sizes of the codes, the guide family, M2's alpha) and
these, with one meaning everywhere: ``hidden_dims``, ``likelihood``, ``prior``, ``obs_scale``,
``prior_components``, ``arch``, ``conv_channels`` and ``activation``.

Example
-------
>>> from pyro_vae.models.vae import VAEConfig
>>> check_network_settings(VAEConfig())  # what VAEConfig's own check already ran
>>> VAEConfig(activation="swish")
Traceback (most recent call last):
...
ValueError: unknown activation 'swish'; choose from: elu, gated, relu, tanh
"""

from __future__ import annotations

from ..errors import check_choice, check_instance, check_int_tuple, check_positive_float, check_positive_int
from .adapters import check_arch, given_networks, resolve_image_shape
from .likelihoods import LIKELIHOODS, check_likelihood_options
from .nets import ACTIVATIONS
from .priors import PRIORS


def check_network_settings(config) -> None:
    """Check the shared fields of ``config`` (see the module docstring), normalizing the
    tuples in place; a bad one is a ``ValueError`` naming the field, the value and the choices."""
    config.hidden_dims = check_int_tuple("hidden_dims", config.hidden_dims)
    check_choice("likelihood", config.likelihood, LIKELIHOODS)
    check_choice("prior", config.prior, PRIORS)
    if config.obs_scale is not None:
        check_positive_float("obs_scale", config.obs_scale)
    check_likelihood_options(config.likelihood, obs_scale=config.obs_scale)
    check_positive_int("prior_components", config.prior_components)
    config.conv_channels = check_arch(config.arch, config.conv_channels)
    check_choice("activation", config.activation, ACTIVATIONS)


def set_up_network_model(model, data_dim: int, config, config_type: type, image_shape, **networks):
    """Set what every network model holds before its networks are built; return the config.

    ``config`` (None: ``config_type()``) must be a ``config_type``. Sets ``model.config``,
    ``model.data_dim``, ``model.user_networks`` (the names of the ``networks`` given, not
    None: saved models ask for them again) and ``model.image_shape`` (``(C, H, W)``, which
    ``arch="conv"`` needs given).
    """
    config = config_type() if config is None else config
    check_instance("config", config, config_type, f"build one with {config_type.__name__}(...)")
    model.config = config
    model.data_dim = check_positive_int("data_dim", data_dim)
    model.user_networks = given_networks(**networks)
    needs = "arch 'conv'" if config.arch == "conv" else None
    model.image_shape = resolve_image_shape(data_dim, image_shape, needs)
    return config
