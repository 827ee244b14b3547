"""SLIF-MR: self-loop iterative fusion of interactions, a knowledge graph and multimodal item
features, on the ``slifmr_kernels`` sparse kernels.

Modules follow the data flow: :mod:`slifmr.data` (layouts, synthetic) -> :mod:`slifmr.graphs`
(graph assembly + feedback insertion) -> :mod:`slifmr.model` (SLIF-MR, LightGCN) ->
:mod:`slifmr.train` / :mod:`slifmr.evaluate` -> :mod:`slifmr.cli`.
"""
import os as _os

# torch and the Numba kernels each run an OpenMP thread pool. With the default (active)
# wait policy the idle pool spins after every parallel region and starves the other one: on 2
# cores that made every small torch op after a Numba call ~10x slower (measured: 5.5 s vs 1.4 s
# per synthetic epoch). Passive waiting must be chosen before either runtime starts, hence here;
# an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import Config, load_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Config", "load_config", "__version__"]
