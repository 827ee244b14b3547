"""The version of the slifmr distribution (slifmr and slifmr_kernels): its one source.

pyproject.toml reads it at build time (``[tool.setuptools.dynamic]``) without importing the
package; ``slifmr.__version__`` and ``slifmr_kernels.__version__`` re-export it.
"""

__version__ = "0.1.0"
