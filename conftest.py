"""Plugins for every test path, the notebooks' included (nbval collects them from ``notebooks/``)."""

pytest_plugins = ["tests.nbval_tolerance"]
