// tests/racecheck/racecheck_main.cpp: racecheck-planted, runs one kernel of planted.cu in the racecheck
// build: `racecheck-planted <case> race|fixed`. The CTest checks (tests/racecheck/CMakeLists.txt)
// expect ThreadSanitizer's report for `race` and a clean exit for `fixed`; ThreadSanitizer makes the
// process exit with its own status when it reports.
#include "planted.h"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  static const struct {
    const char* name;
    Planted which;
  } cases[] = {{"missing_barrier", Planted::missing_barrier},     {"lost_update", Planted::lost_update},
               {"write_after_read", Planted::write_after_read},   {"blocks_same_word", Planted::blocks_same_word},
               {"missing_syncwarp", Planted::missing_syncwarp},   {"shuffle_reduction", Planted::shuffle_reduction}};
  if (argc != 3 || (std::strcmp(argv[2], "race") != 0 && std::strcmp(argv[2], "fixed") != 0)) {
    std::fprintf(stderr, "usage: racecheck-planted <case> race|fixed\n");
    return 2;
  }
  for (const auto& c : cases)
    if (std::strcmp(argv[1], c.name) == 0) {
      const cudaError_t e = run_planted(c.which, std::strcmp(argv[2], "fixed") == 0);
      if (e != cudaSuccess) {
        std::fprintf(stderr, "racecheck-planted: launch failed: %s: %s\n", simt::error_name(e), simt::last_error_message().c_str());
        return 1;
      }
      return 0;
    }
  std::fprintf(stderr, "racecheck-planted: unknown case '%s'\n", argv[1]);
  return 2;
}
