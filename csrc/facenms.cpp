// Op schemas of the facenms library. Kernels register per backend in
// cpu/*.cpp and cuda/*.cu.
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#ifndef FACENMS_BUILD_FLAGS
#define FACENMS_BUILD_FLAGS ""
#endif
#ifndef FACENMS_CUDA_ARCHS
#define FACENMS_CUDA_ARCHS ""
#endif

#ifdef TORCH_EXTENSION_NAME  // built as the Python module facenms._C
#include <Python.h>
// The module only carries the ops; `import facenms._C` registers them.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
#endif

namespace facenms {

std::string build_info() {
  std::string s = "torch=" TORCH_VERSION;
#ifdef WITH_CUDA
  s += "\ncuda=1\ncuda_archs=" FACENMS_CUDA_ARCHS;
#else
  s += "\ncuda=0";
#endif
#if defined(__clang__)
  s += "\ncompiler=clang " __clang_version__;
#elif defined(__GNUC__)
  s += "\ncompiler=gcc " __VERSION__;
#endif
#ifdef _OPENMP
  s += "\nopenmp=" + std::to_string(_OPENMP);
#endif
  s += "\nflags=" FACENMS_BUILD_FLAGS;
  return s;
}

TORCH_LIBRARY(facenms, m) {
  // Per-row float64 norms and sparsity scores s = 1 - cos(x, centre of the
  // identity), rounded to a multiple of 2**-20, for rows `order` grouped by
  // the CSR `offsets`. Both outputs follow `order`.
  m.def("prepare(Tensor x, Tensor order, Tensor offsets) -> (Tensor, Tensor)");
  // Greedy NMS of rows `order` (grouped by `offsets`, rank order within an
  // identity) at every threshold of the ascending `thresholds` (T <= 64, or
  // C x T: one row per identity). Returns bits[i] (bit j: kept at threshold
  // j, following `order`) and the kept counts, shaped like `thresholds`
  // (per lane, or per identity and lane). An identity keeps at least
  // min(min_keep, n) faces in every lane: its best-ranked suppressed ones.
  m.def("nms(Tensor x, Tensor order, Tensor offsets, Tensor thresholds, int min_keep)"
        " -> (Tensor, Tensor)");
  // nms with the float64 row norms of rows `order` (N,) given, as prepare
  // returns them (permuted along with `order`): the CUDA kernels then skip
  // their own pass over the features for the norms. Same outputs as nms.
  m.def("nms_with_norms(Tensor x, Tensor order, Tensor offsets, Tensor thresholds,"
        " int min_keep, Tensor norms) -> (Tensor, Tensor)");
  // nms with the ranking done on the way: rows `order` of each identity are
  // ranked by their sparsity scores (descending, or ascending with
  // centrality; ties by the smaller row index) and walked at once, reading
  // the features once. Returns the ranked order, bits and counts as nms
  // does, and the smallest row that is zero or not finite (-1 if none;
  // then its identity is not walked).
  m.def("rank_nms(Tensor x, Tensor order, Tensor offsets, Tensor thresholds, int min_keep,"
        " bool centrality) -> (Tensor, Tensor, Tensor, Tensor)");
  // The CUDA schedule and tile table, computed on the CPU (for tests): sched
  // (C,) and tiles (n_tiles, 4) = identity, kb, mb, mask offset.
  m.def("_nms_plan(Tensor offsets) -> (Tensor, Tensor)");
  m.def("build_info", &build_info);
}

}  // namespace facenms
