"""Packaging: the library, the harness, and the built-in experiments and configs as package data.

The repository keeps ``experiments/`` and ``configs/`` at the top (where a checkout's README
commands expect them); the wheel installs them as ``wideNN.lab.experiments`` and
``wideNN.lab.configs`` so that ``wideNN list`` / ``wideNN run quickstart`` work after a plain
``pip install``. ``wideNN.lab.discovery`` looks for these packages first, then the checkout.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["wideNN", "wideNN.*"]) + ["wideNN.lab.experiments", "wideNN.lab.configs"],
    package_dir={"wideNN.lab.experiments": "experiments", "wideNN.lab.configs": "configs"},
    package_data={"wideNN": ["datasets/*", "csrc/*.c"], "wideNN.lab.configs": ["*.yaml"]},
)
