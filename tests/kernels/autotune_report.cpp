// tests/kernels/autotune_report.cpp: the winners, table and winners file of `mra-gpu-kit autotune`
// (autotune_report.h).
#include "autotune_report.h"

#include <algorithm>
#include <cstdio>

namespace {

std::string format(const char* f, double a, double b = 0.0) {
  char text[64];
  std::snprintf(text, sizeof text, f, a, b);
  return text;
}

double current(const mra::test::SweepTiming& s) { return std::min(s.before, s.after); }

}  // namespace

int mra::test::autotune_winner(const SweepTiming& s, double margin) {
  if (s.before < 0 || s.after < 0) return -1;
  int best = -1;
  for (size_t i = 0; i < s.candidates.size(); ++i) {
    const CandidateTiming& c = s.candidates[i];
    if (c.why.empty() && c.ms >= 0 && c.ms < current(s) * (1.0 - margin) &&
        (best < 0 || c.ms < s.candidates[size_t(best)].ms))
      best = int(i);
  }
  return best;
}

std::vector<std::string> mra::test::autotune_rows(const SweepTiming& s) {
  const std::string head = "| " + s.config + " | ";
  if (s.before < 0 || s.after < 0)
    return {head + "current tuning | " + (s.why.empty() ? "failed" : s.why) + " | no winner |"};
  std::vector<std::string> rows{head + "current tuning | " + format("%.3f", current(s)) + " | runs " +
                                format("%.3f, %.3f", s.before, s.after) + " |"};
  const int best = autotune_winner(s);
  for (size_t i = 0; i < s.candidates.size(); ++i) {
    const CandidateTiming& c = s.candidates[i];
    rows.push_back(head + c.changes + " | " +
                   (c.why.empty() ? format("%.3f", c.ms) + " | " + format("%+.1f %%", 100.0 * (c.ms / current(s) - 1.0)) +
                                        (int(i) == best ? " winner" : "")
                                  : c.why + " | no winner") +
                   " |");
  }
  return rows;
}

std::string mra::test::autotune_winners(const std::vector<SweepTiming>& sweeps, const std::string& where) {
  std::string tables;
  for (const SweepTiming& s : sweeps) {
    const int best = autotune_winner(s);
    if (best < 0) continue;
    const CandidateTiming& c = s.candidates[size_t(best)];
    std::string keys;  // one assignment per line
    for (size_t i = 0; i < c.changes.size(); ++i) {
      if (c.changes.compare(i, 2, ", ") == 0) keys += '\n', ++i;
      else keys += c.changes[i];
    }
    tables += "\n[name.\"" + s.config + "\"]\n# autotune (" + where + "): " + format("%.3f ms", c.ms) + " with " +
              c.changes + " against " + format("%.3f ms as tuned (%+.1f %%)\n", current(s), 100.0 * (c.ms / current(s) - 1.0)) +
              keys + "\n";
  }
  return "# mra-gpu-kit autotune: measured tuning winners for codegen/tuning.toml; apply them with\n"
         "#   python3 codegen/apply_tuning.py THIS_FILE     (then: python3 codegen/generate.py)\n"
         "# " + where + ", B = 1, forward, median of 21 after 3 warm-ups; a winner beats the current tuning by more "
         "than " + format("%.0f %%.\n", 100 * kAutotuneMargin) +
         (tables.empty() ? "# No candidate did: nothing to change.\n" : tables);
}
