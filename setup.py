"""Build the CUDA extension of slifmr_kernels only where CUDA is usable (the rest of the
install is described by pyproject.toml).

* Default: pure-Python install (torch reference + Numba CPU kernels, numba a core
  dependency; Triton kernels with the 'gpu' extra).
* ``FORCE_CUDA=1``: build ``slifmr_kernels._C`` from ``csrc/`` even without a visible GPU
  (needs torch with CUDA and nvcc; use ``pip install --no-build-isolation`` so the build sees
  the installed torch).
* ``SLIFMR_NO_CUDA=1``: never build it.
"""

import glob
import os

from setuptools import setup


def cuda_extensions():
    """The CUDA extension, or [] where it cannot or should not be built."""
    if os.environ.get("SLIFMR_NO_CUDA", "0") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:  # isolated build environment without torch: pure-Python install
        return [], {}
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    if not (forced or (torch.cuda.is_available() and CUDA_HOME is not None)):
        return [], {}
    sources = sorted(
        glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True)
        + glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True)
    )
    if not sources:
        return [], {}
    archs = os.environ.get("SLIFMR_CUDA_ARCHS", "80;90").split(";")
    nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo"] + [
        f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a
    ]
    ext = CUDAExtension(
        "slifmr_kernels._C", sources, extra_compile_args={"cxx": ["-O3", "-std=c++20"], "nvcc": nvcc_flags}
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

# The project's metadata (name, version, dependencies, extras, entry point) is in pyproject.toml.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
