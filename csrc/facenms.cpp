// Op schemas of the facenms library and its build info. CPU kernels register
// in cpu/*.cpp; CUDA kernels live in a library of their own (cuda/, loaded
// only under a torch with CUDA). This library uses PyTorch's stable ABI only:
// built once against any torch, it loads under every torch from
// TORCH_TARGET_VERSION on.
#include <torch/csrc/stable/library.h>
#include <torch/headeronly/version.h>

#include <string>

#include "cpu/isa.h"

#ifndef FACENMS_BUILD_FLAGS
#define FACENMS_BUILD_FLAGS ""
#endif

#define FACENMS_STR2(x) #x
#define FACENMS_STR(x) FACENMS_STR2(x)

#ifdef TORCH_EXTENSION_NAME  // built as the Python module facenms._C
#include <Python.h>
// The module only carries the ops: importing it registers them. Python's
// limited API (Py_LIMITED_API) keeps this one binary valid for every CPython 3.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
#endif

namespace facenms {

namespace {

std::string build_info() {
  // TORCH_VERSION: the headers this was compiled with; the stable ABI target
  // is the oldest torch it loads under.
  std::string s = "torch=" TORCH_VERSION;
#ifdef TORCH_TARGET_VERSION
  s += "\nstable_abi_target=" + std::to_string((TORCH_TARGET_VERSION >> 56) & 0xff) + "." +
       std::to_string((TORCH_TARGET_VERSION >> 48) & 0xff);
#endif
#if defined(__clang__)
  s += "\ncompiler=clang " __clang_version__;
#elif defined(__GNUC__)
  s += "\ncompiler=gcc " __VERSION__;
#endif
#ifdef _OPENMP
  s += "\nopenmp=" + std::to_string(_OPENMP);
#endif
  // the clone of the CPU hot loops in use (cpu/isa.h), and what this CPU runs
  s += "\ncpu_isa=";
  s += cpu_isa_name();
  s += "\ncpu_isa_supported=" + cpu_isa_supported();
  const std::string isa_error = cpu_isa_error();
  if (!isa_error.empty()) s += "\ncpu_isa_error=" + isa_error;
  s += "\nflags=" FACENMS_BUILD_FLAGS;
  return s;
}

}  // namespace

STABLE_TORCH_LIBRARY(facenms, m) {
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
  // The first pass of label_issues: each identity's rows `order` ranked by
  // centrality (ascending sparsity score as prepare computes it, ties by the
  // smaller row index), the centre of its first ceil(n/2) unit rows (all of
  // them below min_faces rows; zero if shorter than 2**-32 per row) and every
  // row's cosine to it, in float64 (returned in float32, float64 for float64
  // x). Returns the ranked order, centres (C, d), the cosines following the
  // ranked order, and the smallest row that is zero or not finite (-1 if
  // none; its identity gets zeros). CPU only.
  m.def("trimmed_centres(Tensor x, Tensor order, Tensor offsets, int min_faces)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  // The end of label_issues' search for each candidate's nearest other
  // centre, over a block of screened products sims (n, K): int32 sums of
  // int8 rows, or float products of the rows' type. bounds (n, 3) float64
  // holds per row unit, err and need: sims times unit is within err of the
  // exact cosine. A row whose largest product with a centre other than own[i]
  // cannot exceed need gets b = -inf and k = 0; the others get the float64
  // cosine b of y[i] to the nearest centre other than own[i] and its index k
  // (ties: the smaller), taken over the centres within 2 err of that largest.
  // CPU only.
  m.def("nearest_centres(Tensor sims, Tensor bounds, Tensor own, Tensor y, Tensor centres)"
        " -> (Tensor, Tensor)");
  // The int8 screen's rows: float32 rows v (n, d) scaled to +-63 and rounded
  // (half to even), q int8 (n, d), with the scale per row (n,), or one for all
  // rows (0-d) with `common`, and the norm of each row's rounding residual
  // |v - scale q| (n,). CPU only.
  m.def("int8_rows(Tensor v, bool common) -> (Tensor, Tensor, Tensor)");
  // The lower median mu of the values v[mask] of a 1-D float tensor and the
  // lower median of |v - mu| over them (computed in v's type), exactly, as
  // float64 (2,); NaN for no values.
  m.def("median_mad(Tensor v, Tensor mask) -> Tensor");
  // The CUDA schedule and tile table, computed on the host with the code the
  // CUDA library runs (cuda/nms_plan_kernel.cpp; for tests): sched (C,) and tiles
  // (n_tiles, 4) = identity, kb, mb, mask offset. Not part of the API.
  m.def("_nms_plan(Tensor offsets) -> (Tensor, Tensor)");
  m.def("build_info() -> str");
}

// build_info takes no tensor, so it is registered under the catch-all key.
STABLE_TORCH_LIBRARY_IMPL(facenms, CompositeExplicitAutograd, m) {
  m.impl("build_info", TORCH_BOX(&build_info));
}

}  // namespace facenms
