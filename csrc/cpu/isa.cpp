// The clone choice of isa.h: asked of the CPU once, then fixed for the process.
#include "cpu/isa.h"

#include <cstdlib>
#include <cstring>

namespace facenms {
namespace {

constexpr const char* kNames[] = {"baseline", "x86-64-v3", "x86-64-v4"};
constexpr const char* kShort[] = {"baseline", "v3", "v4"};

bool cpu_runs(Isa isa) {
  if (isa == Isa::base) return true;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
#if !defined(__clang__) && __GNUC__ >= 12
  return isa == Isa::v4 ? __builtin_cpu_supports("x86-64-v4") != 0
                        : __builtin_cpu_supports("x86-64-v3") != 0;
#else
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi2");
  return isa == Isa::v3 ? v3
                        : v3 && __builtin_cpu_supports("avx512f") &&
                              __builtin_cpu_supports("avx512bw") &&
                              __builtin_cpu_supports("avx512vl") &&
                              __builtin_cpu_supports("avx512dq");
#endif
#else
  return false;  // not x86-64: only the baseline is built for this CPU
#endif
}

struct Choice {
  Isa isa = Isa::base;
  std::string error;
};

Choice choose() {
  Choice c;
  c.isa = cpu_runs(Isa::v4) ? Isa::v4 : cpu_runs(Isa::v3) ? Isa::v3 : Isa::base;
  const char* want = std::getenv("FACENMS_CPU_ISA");
  if (want == nullptr || *want == '\0') return c;
  for (int i = 0; i < 3; ++i) {
    if (std::strcmp(want, kShort[i]) != 0 && std::strcmp(want, kNames[i]) != 0) continue;
    if (cpu_runs(static_cast<Isa>(i))) {
      c.isa = static_cast<Isa>(i);
    } else {
      c.error = std::string("FACENMS_CPU_ISA=") + want + ": this CPU cannot run the " +
                kNames[i] + " clone (it runs: " + cpu_isa_supported() + ")";
    }
    return c;
  }
  c.error = std::string("FACENMS_CPU_ISA=") + want + " is not a clone level: use one of " +
            cpu_isa_supported() + " (or unset it for the best)";
  return c;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

Isa cpu_isa() { return choice().isa; }

const char* cpu_isa_name() { return kNames[static_cast<int>(cpu_isa())]; }

std::string cpu_isa_supported() {
  std::string s;
  for (int i = 2; i >= 0; --i)
    if (cpu_runs(static_cast<Isa>(i))) s += std::string(s.empty() ? "" : ",") + kShort[i];
  return s;
}

std::string cpu_isa_error() { return choice().error; }

}  // namespace facenms
