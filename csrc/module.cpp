// Python entry point of the extension `slifmr_kernels._C`. The ops register themselves with
// the torch dispatcher when the library is loaded (TORCH_LIBRARY_FRAGMENT in the bindings);
// this empty module only makes `import slifmr_kernels._C` load it.
#include <Python.h>

static struct PyModuleDef slifmr_c_module = {
    PyModuleDef_HEAD_INIT, "_C",
    "CUDA kernels of slifmr_kernels; ops live in torch.ops.slifmr_cuda", -1, nullptr,
    nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&slifmr_c_module); }
