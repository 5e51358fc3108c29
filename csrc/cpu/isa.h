// Which clone of the CPU hot loops runs: x86-64-v4 (AVX-512), x86-64-v3
// (AVX2, FMA) or the baseline. The best level the CPU reports, unless
// FACENMS_CPU_ISA=v4|v3|baseline asks for another one; a level this CPU
// cannot run is refused (every op raises cpu_isa_error()).
#pragma once

#include <string>

namespace facenms {

enum class Isa : int { base = 0, v3 = 1, v4 = 2 };

Isa cpu_isa();                  // the clone in use (chosen once per process)
const char* cpu_isa_name();     // "x86-64-v4", "x86-64-v3" or "baseline"
std::string cpu_isa_supported();  // the levels this CPU runs, best first: "v4,v3,baseline"
std::string cpu_isa_error();    // why FACENMS_CPU_ISA was refused; empty if it was not

}  // namespace facenms
