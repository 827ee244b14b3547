"""Install slifmr and slifmr_kernels; build the CUDA extension only where CUDA is usable.

* Default: pure-Python install (torch reference + Numba CPU kernels, numba a core
  dependency; Triton kernels with the 'gpu' extra).
* ``FORCE_CUDA=1``: build ``slifmr_kernels._C`` from ``csrc/`` even without a visible GPU
  (needs torch with CUDA and nvcc; use ``pip install --no-build-isolation`` so the build sees
  the installed torch).
* ``SLIFMR_NO_CUDA=1``: never build it.
"""

import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


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

setup(
    name="slifmr",
    version="0.1.0",
    description="Scalable sparse and top-k kernels for graph recommenders, and the SLIF-MR "
    "multimodal recommender built on them",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["slifmr_kernels*", "slifmr*"]),
    python_requires=">=3.10",
    install_requires=[
        # 2.13.0 is the CPU build this project develops on; any 2.x >= 2.4 has the
        # torch.library APIs the ops use.
        "torch>=2.4,<=2.14.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        # The CPU kernels: without numba, backend="auto" runs the torch reference (~3.5x
        # slower for propagate). threadpoolctl pins BLAS to one thread inside the Numba
        # top-k's parallel region.
        "numba>=0.59",
        "threadpoolctl>=3.0",
    ],
    extras_require={
        # kept for old install commands: numba and threadpoolctl are core dependencies now
        "cpu": ["numba>=0.59", "threadpoolctl>=3.0"],
        "gpu": ["triton>=3.0"],
        "bench": ["faiss-cpu>=1.8", "pytest-benchmark>=4.0"],
        # slifmr tune (Optuna), TensorBoard events of every run, curves.png and result figures
        "track": ["optuna>=3.0", "tensorboard>=2.10", "matplotlib>=3.7"],
        "test": [
            "pytest>=7",
            "pytest-benchmark>=4.0",
            "numba>=0.59",
            "threadpoolctl>=3.0",
            "triton>=3.0",
            "optuna>=3.0",
            "tensorboard>=2.10",
            "matplotlib>=3.7",
        ],
    },
    entry_points={"console_scripts": ["slifmr = slifmr.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
