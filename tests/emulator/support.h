// tests/emulator/support.h: helpers shared by the emulator tests: the schedules every kernel test
// runs under, and restoring the emulator's settings after a test.
#pragma once

#include "simt/simt.h"

#include "common/doctest.h"

#include <cstdint>
#include <string>
#include <vector>

struct NamedSchedule {
  std::string name;
  simt::Schedule schedule;
  uint64_t seed;
};

// Kernel tests must give the same answer under every one of these.
inline const std::vector<NamedSchedule>& all_schedules() {
  static const std::vector<NamedSchedule> s = {{"ascending", simt::Schedule::ascending, 0},
                                               {"descending", simt::Schedule::descending, 0},
                                               {"shuffled seed 1", simt::Schedule::shuffled, 1},
                                               {"shuffled seed 2", simt::Schedule::shuffled, 2}};
  return s;
}

// Puts the default settings back when a test ends, whatever it changed, and clears the sticky
// error a test that makes a kernel fault leaves behind.
struct EmulatorSettings {
  EmulatorSettings() { reset(); }
  ~EmulatorSettings() { reset(); }
  static void reset() {
    simt::set_schedule(simt::Schedule::ascending, 0);
    simt::set_worker_threads(1);
    simt::set_stack_size(0);
    simt::device_reset();
  }
  void use(const NamedSchedule& s) { simt::set_schedule(s.schedule, s.seed); }
};

// CHECKs a launch result, showing the emulator's message when it is not cudaSuccess.
#define CHECK_LAUNCH(expr)                                         \
  do {                                                             \
    const cudaError_t simt_test_rc_ = (expr);                      \
    INFO("launch error: ", simt::last_error_message());            \
    CHECK_MESSAGE(simt_test_rc_ == cudaSuccess, simt::error_name(simt_test_rc_)); \
  } while (0)
