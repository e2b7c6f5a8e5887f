// tests/common/skip.h: a doctest case that needs a generated configuration the build left out (-DMRA_KERNELS
// selects them) reports itself skipped, never passed and never failed: it calls skip_unless_built() and returns
// when that is false. The shared main (tests/main.cpp) exits with 77, the SKIP_RETURN_CODE of every doctest test
// (mra_add_doctest), when every case it ran skipped itself and no assertion failed. Needs the build's list of
// configurations (link mra_kernel_registry).
#pragma once

#include "common/doctest.h"

#include <initializer_list>
#include <string>
#include <string_view>

namespace mra::test {

// Set by skip_unless_built, read and counted per test case by the listener of tests/main.cpp.
inline bool case_skipped = false;
inline int cases_started = 0, cases_skipped = 0;

// Whether this build has the generated configuration `name` (the build's registry.inc lists those MRA_KERNELS
// selected).
inline bool configuration_built(std::string_view name) {
#define MRA_CONFIG(cname, ...) \
  if (name == #cname) return true;
#include "registry.inc"
#undef MRA_CONFIG
  return false;
}

// True when every configuration in `names` is built; otherwise prints which are not and marks the running case
// skipped.
inline bool skip_unless_built(std::initializer_list<std::string_view> names) {
  std::string missing;
  for (std::string_view name : names)
    if (!configuration_built(name)) missing += (missing.empty() ? "" : ", ") + std::string(name);
  if (missing.empty()) return true;
  MESSAGE("skipped: needs ", missing, ", which this build leaves out (MRA_KERNELS)");
  case_skipped = true;
  return false;
}

}  // namespace mra::test
