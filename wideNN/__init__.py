"""wideNN: finite-width neural networks and their infinite-width limits, side by side.

One description — the MLP shorthand ``Architecture`` or a composition of layers
``Serial(Conv(...), "relu", …)`` (``wideNN.layers``) — yields a trainable network
(``arch.build``), its analytic NNGP and NTK (``arch.kernels``), GPyTorch kernels, empirical
kernels of finite networks, exact GP / NTK-GP inference and training utilities.  Conventions follow neural-tangents' ``stax``.
"""
from ._version import __version__
from . import activations, data
from .architecture import Architecture
from .networks import Network
from .layers import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Residual, Serial
from .analytic import kernels
from .empirical import empirical_ntk, empirical_nngp
from .gp_kernels import NNGPKernel, NTKKernel
from .prediction import Posterior, posterior, log_marginal_likelihood
from .selection import FitOptions, FitResult, fit_hyperparameters

from .training import TrainHistory, TrainOptions, train, max_learning_rate
from .linearize import TaylorModel, linearize, taylor
from .ensemble import Ensemble
from . import distributed

__all__ = [
    "activations", "data", "Architecture", "Serial", "Dense", "Conv", "AvgPool", "GlobalAvgPool",
    "Flatten", "Residual", "Network", "kernels", "empirical_ntk",
    "empirical_nngp", "NNGPKernel", "NTKKernel", "Posterior", "posterior", "log_marginal_likelihood",
    "FitOptions", "FitResult", "fit_hyperparameters", "TrainHistory", "TrainOptions", "train", "max_learning_rate", "TaylorModel",
    "linearize", "taylor", "Ensemble", "distributed",
]
