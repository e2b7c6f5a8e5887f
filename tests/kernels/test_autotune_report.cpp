// tests/kernels/test_autotune_report.cpp: what `mra-gpu-kit autotune` makes of its timings (autotune_report.h),
// without a GPU (label codegen): the winner rule (margin, the better current run, failed and wrong candidates never
// win), the table rows, the winners file's text, and its round trip through codegen/apply_tuning.py into a copy of
// codegen/tuning.toml.
#include "common/doctest.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "autotune_report.h"

namespace {

using mra::test::CandidateTiming;
using mra::test::SweepTiming;

SweepTiming sweep() {
  SweepTiming s;
  s.config = "mra_fwd_r32x1_d64_bf16";
  s.before = 1.10;
  s.after = 1.00;  // the better run: what a candidate must beat
  s.candidates = {{"key_tile = 64", 0.98, ""},                    // 2 %: inside the margin
                  {"key_tile = 16", 0.95, ""},                    // 5 %: the winner
                  {"stages = 2", 0.90, "wrong result: 3 of 9"},   // faster but wrong
                  {"stages = 4", 0.80, "failed: launch failed"},  // never timed properly
                  {"query_rows = 16", 0.96, ""}};                 // beats the margin, slower than the winner
  return s;
}

std::string read(const std::filesystem::path& path) {
  std::ifstream f(path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("autotune: the winner beats the better current run by more than the margin, and is correct") {
  SweepTiming s = sweep();
  CHECK(mra::test::autotune_winner(s) == 1);
  s.candidates[1].ms = 0.975;  // 2.5 % better than 1.00 only: the 0.96 one wins now
  CHECK(mra::test::autotune_winner(s) == 4);
  s.candidates[4].ms = 0.971;  // 2.9 %: nobody
  CHECK(mra::test::autotune_winner(s) == -1);
  s = sweep();
  s.after = -1.0;  // the current tuning failed on its second run: no winner, whatever the candidates did
  CHECK(mra::test::autotune_winner(s) == -1);
  s = sweep();
  s.before = 0.97;  // the first run was the better one: 0.95 is 2.1 % better only
  CHECK(mra::test::autotune_winner(s) == -1);
}

TEST_CASE("autotune: table rows") {
  const std::vector<std::string> rows = mra::test::autotune_rows(sweep());
  REQUIRE(rows.size() == 6);
  CHECK(rows[0] == "| mra_fwd_r32x1_d64_bf16 | current tuning | 1.000 | runs 1.100, 1.000 |");
  CHECK(rows[1] == "| mra_fwd_r32x1_d64_bf16 | key_tile = 64 | 0.980 | -2.0 % |");
  CHECK(rows[2] == "| mra_fwd_r32x1_d64_bf16 | key_tile = 16 | 0.950 | -5.0 % winner |");
  CHECK(rows[3] == "| mra_fwd_r32x1_d64_bf16 | stages = 2 | wrong result: 3 of 9 | no winner |");
  CHECK(rows[4] == "| mra_fwd_r32x1_d64_bf16 | stages = 4 | failed: launch failed | no winner |");
  SweepTiming failed = sweep();
  failed.before = -1.0;
  failed.why = "failed: no device buffers";
  CHECK(mra::test::autotune_rows(failed) ==
        std::vector<std::string>{"| mra_fwd_r32x1_d64_bf16 | current tuning | failed: no device buffers | no winner |"});
}

TEST_CASE("autotune: the winners file, and its merge by codegen/apply_tuning.py") {
  SweepTiming two = sweep();
  two.config = "mra_fwd_r32x1_d128_bf16";
  two.candidates = {{"key_tile = 64, stages = 2", 0.5, ""}};
  SweepTiming none = sweep();
  none.config = "mra_fwd_r64x1_d64_bf16";
  none.candidates = {{"stages = 2", 0.99, ""}};
  const std::string where = "Test GPU, N = 8192, heads = 16";
  const std::string text = mra::test::autotune_winners({sweep(), two, none}, where);
  CHECK(text ==
        "# mra-gpu-kit autotune: measured tuning winners for codegen/tuning.toml; apply them with\n"
        "#   python3 codegen/apply_tuning.py THIS_FILE     (then: python3 codegen/generate.py)\n"
        "# Test GPU, N = 8192, heads = 16, B = 1, forward, median of 21 after 3 warm-ups; a winner beats the current "
        "tuning by more than 3 %.\n"
        "\n[name.\"mra_fwd_r32x1_d64_bf16\"]\n"
        "# autotune (Test GPU, N = 8192, heads = 16): 0.950 ms with key_tile = 16 against 1.000 ms as tuned (-5.0 %)\n"
        "key_tile = 16\n"
        "\n[name.\"mra_fwd_r32x1_d128_bf16\"]\n"
        "# autotune (Test GPU, N = 8192, heads = 16): 0.500 ms with key_tile = 64, stages = 2 against 1.000 ms as tuned "
        "(-50.0 %)\n"
        "key_tile = 64\nstages = 2\n");
  const std::string empty = mra::test::autotune_winners({none}, where);
  CHECK(empty.find("[name.") == std::string::npos);
  CHECK(empty.find("# No candidate did: nothing to change.\n") != std::string::npos);

  // The round trip: apply_tuning.py reads the file as written and merges it into a copy of the table.
  const std::filesystem::path work = MRA_WORK_DIR;
  std::filesystem::create_directories(work);
  std::ofstream(work / "winners.toml") << text;
  std::filesystem::remove(work / "tuning.toml");
  const std::string command = "python3 " MRA_SOURCE_DIR "/codegen/apply_tuning.py " + (work / "winners.toml").string() +
                              " --out " + (work / "tuning.toml").string() + " > " + (work / "log").string() + " 2>&1";
  INFO(command, "\n", read(work / "log"));
  REQUIRE(std::system(command.c_str()) == 0);
  const std::string merged = read(work / "tuning.toml"), original = read(MRA_SOURCE_DIR "/codegen/tuning.toml");
  CHECK(merged.rfind(original.substr(0, original.find("[name.")), 0) == 0);  // the head of the table kept
  CHECK(merged.find("[name.mra_fwd_r32x1_d128_bf16]\n# autotune (Test GPU, N = 8192, heads = 16): 0.500 ms with "
                    "key_tile = 64, stages = 2 against 1.000 ms as tuned (-50.0 %)\nmax_registers = 200\nkey_tile = "
                    "64\nstages = 2\n") != std::string::npos);
  CHECK(merged.find("\n[name.\"mra_fwd_r32x1_d64_bf16\"]\n# autotune (Test GPU, N = 8192, heads = 16): 0.950 ms with "
                    "key_tile = 16 against 1.000 ms as tuned (-5.0 %)\nkey_tile = 16\n") != std::string::npos);
  CHECK(read(work / "log").find("mra_fwd_r32x1_d64_bf16: key_tile 32 -> 16") != std::string::npos);
}
