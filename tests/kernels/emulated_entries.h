// tests/kernels/emulated_entries.h: the emulated entry point of every configuration this build has (registry.inc,
// as -DMRA_KERNELS selected them) with its shape, for the tests that call an entry directly with a layout of their
// own (test_launch_split.cpp, test_column_split.cpp, test_small_level1.cpp). Each test picks the configurations it needs from the table.
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

// Every configuration of the build, in registry.inc's order.
inline const std::vector<EmulatedEntry>& emulated_entries() {
  static const std::vector<EmulatedEntry> all{
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, &name##_emulated, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
  };
  return all;
}

}  // namespace mra::test
