"""The translation of CUDA sources for the CPU emulator (tests/cuda_emu.py)."""

from tests.cuda_emu import emulation_source, rewrite_launches


def test_rewrite_launches():
    src = "a<T, 4><<<nb, 256, 0, st>>>(p, f(q), r);\nk<<<1, 2>>>();"
    assert rewrite_launches(src) == (
        "emu::launch(nb, 256, 0, st, [&]() { a<T, 4>(p, f(q), r); });\nemu::launch(1, 2, [&]() { k(); });"
    )


def test_emulation_source_dynamic_shared_memory():
    src = (
        "  extern __shared__ __align__(128) unsigned char smem[];\n"
        "extern __shared__ float buf [ ];\nk<<<1, 2, b>>>(x);"
    )
    assert emulation_source(src) == (
        "  unsigned char* smem = reinterpret_cast<unsigned char*>(emu::dynamic_smem());\n"
        "float* buf = reinterpret_cast<float*>(emu::dynamic_smem());\n"
        "emu::launch(1, 2, b, [&]() { k(x); });"
    )
