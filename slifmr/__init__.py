"""SLIF-MR: self-loop iterative fusion of interactions, a knowledge graph and multimodal item
features, on the ``slifmr_kernels`` sparse kernels.

Modules follow the data flow: :mod:`slifmr.data` (layouts, synthetic) -> :mod:`slifmr.graphs`
(graph assembly + feedback insertion) -> :mod:`slifmr.models` (SLIF-MR, LightGCN, FREEDOM, LATTICE) ->
:mod:`slifmr.train` / :mod:`slifmr.evaluate` -> :mod:`slifmr.cli`.
"""

# The kernels first: they choose the OpenMP wait policy before torch starts its thread pool.
import slifmr_kernels  # noqa: F401
from slifmr_kernels import __version__  # one version for both packages

from .config import Config, load_config  # noqa: E402

__all__ = ["Config", "load_config", "__version__"]
