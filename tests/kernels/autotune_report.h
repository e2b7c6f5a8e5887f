// tests/kernels/autotune_report.h: what `mra-gpu-kit autotune` (autotune_cuda.cpp) makes of its timings: the winner
// of each configuration, the table rows and the winners file for codegen/apply_tuning.py. Plain C++ without CUDA,
// so that test_autotune_report.cpp checks it (and its file's round trip through apply_tuning.py) without a GPU.
#pragma once

#include <string>
#include <vector>

namespace mra::test {

// The noise margin: a candidate wins only when it is more than 3 % faster than the current tuning.
inline constexpr double kAutotuneMargin = 0.03;

struct CandidateTiming {  // also the current tuning's runs (changes empty)
  std::string changes;  // its tuning keys, "key = value, key = value", as autotune.inc gives them
  double ms = -1.0;     // median time; negative when it has none
  std::string why;      // empty when timed and correct; else "failed: ..." or "wrong result: ..."
};

// One configuration's sweep: the current tuning timed before and after its candidates.
struct SweepTiming {
  std::string config;
  double before = -1.0, after = -1.0;
  std::string why;  // why the current tuning has no time (then no candidate can win)
  std::vector<CandidateTiming> candidates;
};

// The index of the winner among s.candidates, or -1: the fastest timed, correct candidate that beats the better
// of the current tuning's two runs by more than `margin`.
int autotune_winner(const SweepTiming& s, double margin = kAutotuneMargin);

// The table rows of one sweep, "| configuration | candidate | ms | vs current |".
std::vector<std::string> autotune_rows(const SweepTiming& s);

// The winners file: a header naming `where` (GPU, N, heads), then one [name."<configuration>"] table per winner
// with a `# autotune` line of its times and the candidate's keys, one per line.
std::string autotune_winners(const std::vector<SweepTiming>& sweeps, const std::string& where);

}  // namespace mra::test
