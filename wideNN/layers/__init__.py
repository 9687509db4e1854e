"""Composable layers: one description for finite networks and their NNGP/NTK beyond the MLP.

``Serial(Conv(3), "relu", Residual(...), AvgPool(2), GlobalAvgPool(), Flatten(), Dense(), ...)``
builds a finite ``nn.Module`` (``.build``) and computes the infinite-width kernels
(``.kernels`` / ``.nngp`` / ``.ntk``) with per-position covariances for convolutions
(Novak et al. 2019; Garriga-Alonso et al. 2019; Arora et al. 2019).
"""
from .base import Layer, LayerError
from .dense import Dense
from .conv import Conv
from .pooling import AvgPool, GlobalAvgPool
from .flatten import Flatten
from .residual import Residual
from .activation import ActivationLayer
from .serial import Serial
from .build import LayerNetwork
from ._state import KernelState

__all__ = ["Layer", "LayerError", "Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "Residual",
           "ActivationLayer", "Serial", "LayerNetwork", "KernelState"]
