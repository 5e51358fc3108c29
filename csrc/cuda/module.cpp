// facenms._C_cuda: the CUDA kernels of the facenms ops, a library of their
// own so the CPU library (facenms._C) loads under a torch without CUDA.
// Importing it registers the kernels; the schemas come from facenms._C,
// which must be loaded first. It uses the regular (non-stable) ABI, so it
// loads only under the torch release it was built against.
#ifdef TORCH_EXTENSION_NAME  // built as the Python module facenms._C_cuda
#include <Python.h>

PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
#endif
