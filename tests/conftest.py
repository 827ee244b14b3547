"""Shared fixtures: every op test runs on each (device, backend) pair this machine can run;
the CUDA kernels built for the CPU emulator (tests/<op>/test_cuda.py).

Triton kernels are exercised on CPU through the interpreter, so TRITON_INTERPRET=1 is set
before anything imports triton when no GPU is present.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from slifmr_kernels.backends import available_backends  # noqa: E402


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def device_backend_pairs(op):
    """(device, backend) for every backend that can serve ``op`` on every device here."""
    return [(dev, b) for dev in devices() for b in available_backends(dev, op=op)]


def pytest_generate_tests(metafunc):
    op = getattr(metafunc.module, "OP", None)
    names = metafunc.fixturenames
    if op and "backend" in names and "device" in names:
        pairs = device_backend_pairs(op)
        metafunc.parametrize(("device", "backend"), pairs, ids=[f"{d}-{b}" for d, b in pairs])
    elif "device" in names:
        metafunc.parametrize("device", devices())


@pytest.fixture
def gen():
    """A generator with a fresh seed per test, printed so that a failure can be replayed with
    SLIFMR_TEST_SEED=<seed>."""
    seed = int(os.environ.get("SLIFMR_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"SLIFMR_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="session")
def emu_library(tmp_path_factory):
    """The CUDA kernels and bindings built for the CPU emulator (tests/cuda_emu.py), once per
    session: the .so path."""
    import shutil

    from tests.cuda_emu import build_emulation_library

    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    return build_emulation_library(tmp_path_factory.mktemp("emu"))


@pytest.fixture(scope="module")
def emu_ops(emu_library):
    """The Python CUDA backend modules (propagate, topk, fuse) wired to the emulation build,
    for one test module; the real backends are restored after it."""
    from tests.cuda_emu import fresh_cuda_backends

    with fresh_cuda_backends(emu_library):
        from slifmr_kernels.fuse import cuda as fc
        from slifmr_kernels.propagate import cuda as pc
        from slifmr_kernels.topk import cuda as tc

        for mod in (pc, tc, fc):
            mod.stream_of = lambda t: 0  # no CUDA stream on the CPU
        yield pc, tc, fc


@pytest.fixture(scope="module")
def emu_probe(emu_ops, emu_library):
    from tests.cuda_emu import EmuProbe

    return EmuProbe(emu_library)
