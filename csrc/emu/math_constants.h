// Stub of <math_constants.h> for the CPU emulation build (tests only; see cuda_emu.h).
#pragma once
#include <limits>
#define CUDART_INF_F (std::numeric_limits<float>::infinity())
#define CUDART_INF (std::numeric_limits<double>::infinity())
