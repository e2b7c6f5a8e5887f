// tests/kernels/emulated_entries.h: the emulated entry points of the build's configurations (generated/registry.inc,
// which MRA_KERNELS may restrict) with their parameters, for the kernels tests that call an entry point directly
// with a layout of their own (test_launch_split.cpp, test_column_split.cpp, test_small_level1.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/entry.h"
#include "mra.h"

#define MRA_CONFIG(name, ...) extern "C" mra_status name##_emulated(const mra::kern::KernelArgs*);
#include "registry.inc"
#undef MRA_CONFIG

namespace mra::test {

struct EmulatedEntry {
  const char* name;
  mra::kern::EntryFn run;
  mra_dtype dtype;
  int64_t dim;
  int32_t levels;
  int64_t sides[4];
};

inline const std::vector<EmulatedEntry>& emulated_entries() {
  static const std::vector<EmulatedEntry> all{
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, &name##_emulated, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
  };
  return all;
}

// The first two-level f32 configuration of the build; null when there is none.
inline const EmulatedEntry* two_level_f32() {
  for (const EmulatedEntry& e : emulated_entries())
    if (e.dtype == MRA_DTYPE_F32 && e.levels == 2) return &e;
  return nullptr;
}

}  // namespace mra::test
