"""wideNN: finite-width neural networks and their infinite-width limits, side by side.

One ``Architecture`` yields a trainable network (``arch.build``), its analytic NNGP and NTK
(``arch.kernels``), GPyTorch kernels, empirical kernels of finite networks, exact GP / NTK-GP
inference and training utilities.  Conventions follow neural-tangents' ``stax``.
"""
from . import activations, data
from .architecture import Architecture
from .networks import Dense, Network
from .analytic import kernels
from .empirical import empirical_ntk, empirical_nngp
from .gp_kernels import NNGPKernel, NTKKernel
from .prediction import Posterior, posterior, log_marginal_likelihood, prior
from .predictor import Predictor, PredictorOptions, Regime, QueryKernels
from .dynamics import GradientFlow, GradientDescent, Momentum
from .metrics import mse_loss, gaussian_log_likelihood
from .trajectory import NetworkTrajectory, network_kernels
from .xent import CrossEntropyTrajectory
from .monte_carlo import MonteCarloKernels, monte_carlo_kernels
from .selection import FitResult, fit_hyperparameters

from .training import TrainHistory, train, max_learning_rate
from .linearize import TaylorModel, linearize, taylor
from .ensemble import Ensemble

__all__ = [
    "activations", "data", "Architecture", "Dense", "Network", "kernels", "empirical_ntk",
    "empirical_nngp", "NNGPKernel", "NTKKernel", "Posterior", "posterior", "log_marginal_likelihood",
    "prior", "Predictor", "PredictorOptions", "Regime", "QueryKernels", "GradientFlow", "GradientDescent",
    "Momentum", "mse_loss", "gaussian_log_likelihood", "NetworkTrajectory", "network_kernels",
    "CrossEntropyTrajectory", "MonteCarloKernels", "monte_carlo_kernels",
    "FitResult", "fit_hyperparameters", "TrainHistory", "train", "max_learning_rate", "TaylorModel",
    "linearize", "taylor", "Ensemble",
]
__version__ = "0.1.0"
