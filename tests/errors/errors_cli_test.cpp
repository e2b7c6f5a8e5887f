// tests/errors/errors_cli_test.cpp: one test case per row of docs/errors.md for mra-ref: every class of bad
// file, shape, dtype, value, option and output path, and what the user sees (the exact one-line message and
// exit status 2). Every refused run is made twice, without and with an existing output file, and must leave
// the folder exactly as it was: no output, no temporary, the old output byte for byte.
//   ctest --test-dir build -L cli -R errors      or      build/tests/errors/errors_cli_test
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sys/stat.h>

#include "harness.h"

using namespace errors_test;

namespace {

constexpr int64_t kN = 64, kD = 8;

// A folder holding valid q.npy, k.npy and v.npy of shape [64, 8].
struct Inputs : InputFolder {
  Inputs() : InputFolder(kN, kD) {}
};

// The run must be refused (check_refused) with the line "<subject>: <message>". It is made once without an
// output file and once with one; the old output must come out unchanged.
void refused(const Scratch& dir, std::vector<std::string> args, const std::string& subject,
             const std::string& message, const std::string& output = "out.npy") {
  const bool names_output = std::find(args.begin(), args.end(), "-o") != args.end();
  if (!names_output) {
    args.push_back("-o");
    args.push_back(output);
  }
  for (const bool existed : {false, true}) {
    CAPTURE(existed);
    const std::string old = "an earlier result";
    if (existed) write_file(dir.file(output), old);
    check_refused(dir, args, subject + ": " + message);
    if (existed) CHECK(read_file(dir.file(output)) == old);
    std::filesystem::remove(dir.file(output));
  }
}

void replace(Inputs& dir, const std::string& name, const std::string& bytes) { write_file(dir.file(name), bytes); }

const std::string kData = bytes_of(values(kN * kD));

}  // namespace

// ------------------------------------------------------------------------------------------------ files
TEST_CASE("errors: missing file") {
  Inputs dir;
  refused(dir, with_inputs("attend", {}, "absent.npy"), "absent.npy", "cannot open: No such file or directory");
}

TEST_CASE("errors: a folder instead of a file") {
  Inputs dir;
  std::filesystem::create_directory(dir.file("sub"));
  refused(dir, with_inputs("attend", {}, "sub"), "sub", "is a folder, not a file");
}

TEST_CASE("errors: not a .npy file") {
  Inputs dir;
  for (const std::string& bytes : {std::string(), std::string("q,k,v\n1,2,3\n"), std::string("\x93NUMP", 5)}) {
    CAPTURE(bytes);
    replace(dir, "q.npy", bytes);
    refused(dir, with_inputs("attend", {}), "q.npy", "not a .npy file (bad magic string)");
  }
  // The start of a zip archive (what np.savez writes) is read as one, whatever the file's name; this one is
  // broken (tests/cli/files_test.cpp and tests/interop/files_test.py read whole ones).
  replace(dir, "q.npy", std::string("PK\x03\x04\x14\x00\x00\x00", 8) + kData);
  refused(dir, with_inputs("attend", {}), "q.npy", "not a ZIP archive (.npz): no end of central directory record");
}

TEST_CASE("errors: unsupported format version") {
  Inputs dir;
  std::string bytes = npy("<f4", "(64, 8)", kData);
  bytes[6] = 4;
  replace(dir, "q.npy", bytes);
  refused(dir, with_inputs("attend", {}), "q.npy", "unsupported .npy format version 4.0");
}

TEST_CASE("errors: truncated header") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(64, 8)", kData).substr(0, 40));
  refused(dir, with_inputs("attend", {}), "q.npy", "truncated: the header claims 118 bytes, the file holds 30 after the prefix");
  replace(dir, "q.npy", npy("<f4", "(64, 8)", kData).substr(0, 9));
  refused(dir, with_inputs("attend", {}), "q.npy", "truncated: the file ends inside the header length");
}

TEST_CASE("errors: oversized header length") {
  Inputs dir;
  std::string bytes = npy("<f4", "(64, 8)", kData);
  bytes[8] = '\xff';
  bytes[9] = '\xff';
  replace(dir, "q.npy", bytes);
  refused(dir, with_inputs("attend", {}), "q.npy", "truncated: the header claims 65535 bytes, the file holds 2166 after the prefix");
}

TEST_CASE("errors: malformed header") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(64 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "malformed header: expected ',' or ')' in 'shape'");
  replace(dir, "q.npy", npy("<f4", "(-64, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "malformed header: a shape entry is not a non-negative integer");
}

TEST_CASE("errors: lying shape") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(6400, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "truncated: the shape needs 51200 elements of 4 bytes, the file holds 2048 data bytes");
}

TEST_CASE("errors: data beyond the shape") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(32, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "size mismatch: the shape needs 256 elements of 4 bytes, the file holds 2048 data bytes");
}

TEST_CASE("errors: dimensions whose product overflows") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(4294967296, 4294967296)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "the shape's element count does not fit in 64 bits");
  replace(dir, "q.npy", npy("<f4", "(18446744073709551616, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "malformed header: a dimension does not fit in 64 bits");
}

TEST_CASE("errors: big-endian array") {
  Inputs dir;
  replace(dir, "q.npy", npy(">f4", "(64, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "big-endian dtype '>f4' is not supported (save with dtype '<f4')");
}

TEST_CASE("errors: Fortran-order array") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(64, 8)", kData, "True"));
  refused(dir, with_inputs("attend", {}), "q.npy", "fortran_order True is not supported (save np.ascontiguousarray(x))");
}

TEST_CASE("errors: unsupported dtype") {
  Inputs dir;
  replace(dir, "q.npy", npy("<c8", "(64, 4)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "unsupported dtype '<c8' (supported: float16/32/64, bool, integers)");
  replace(dir, "q.npy", npy("<i4", "(64, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "dtype '<i4' is not supported for Q, K and V (use float16, float32 or float64)");
}

// ------------------------------------------------------------------------------------------------ shapes
TEST_CASE("errors: zero-size dimension") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(0, 8)", ""));
  refused(dir, with_inputs("attend", {}), "q.npy", "shape [0, 8] has an empty dimension");
  replace(dir, "q.npy", npy("<f4", "(0, 2, 64, 8)", ""));
  refused(dir, with_inputs("attend", {}), "q.npy", "shape [0, 2, 64, 8] has an empty dimension");
}

TEST_CASE("errors: D = 0") {
  Inputs dir;
  for (const char* name : {"q.npy", "k.npy", "v.npy"}) replace(dir, name, npy("<f4", "(64, 0)", ""));
  refused(dir, with_inputs("attend", {}), "q.npy", "shape [64, 0] has an empty dimension");
}

TEST_CASE("errors: rank other than 2, 3 or 4") {
  Inputs dir;
  replace(dir, "q.npy", npy("<f4", "(512,)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "shape [512] is not [N, D], [H, N, D] or [B, H, N, D]");
  replace(dir, "q.npy", npy("<f4", "(1, 1, 1, 64, 8)", kData));
  refused(dir, with_inputs("attend", {}), "q.npy", "shape [1, 1, 1, 64, 8] is not [N, D], [H, N, D] or [B, H, N, D]");
}

TEST_CASE("errors: Q and K disagree") {
  Inputs dir;
  replace(dir, "k.npy", npy("<f4", "(1, 64, 8)", kData));
  refused(dir, with_inputs("attend", {}), "k.npy", "shape [1, 64, 8] does not have the rank of Q's [64, 8]");
  replace(dir, "k.npy", npy("<f4", "(128, 4)", kData));
  refused(dir, with_inputs("attend", {}), "k.npy",
          "shape [128, 4] does not match Q's [64, 8] (batch and head dimension must agree)");
  // Fewer K/V heads than Q's are grouped K/V heads when they divide Q's (docs/semantics.md §8), an error otherwise.
  replace(dir, "q.npy", npy("<f4", "(4, 16, 8)", kData));
  replace(dir, "k.npy", npy("<f4", "(3, 16, 8)", std::string(kData).substr(0, 3 * 16 * 8 * 4)));
  replace(dir, "v.npy", npy("<f4", "(3, 16, 8)", std::string(kData).substr(0, 3 * 16 * 8 * 4)));
  refused(dir, with_inputs("attend", {}), "k.npy",
          "shape [3, 16, 8] has 3 heads, which do not divide Q's 4 (grouped K/V heads need heads_kv dividing heads)");
}

TEST_CASE("errors: V differs from K") {
  Inputs dir;
  replace(dir, "v.npy", npy("<f4", "(32, 16)", kData));
  refused(dir, with_inputs("attend", {}), "v.npy", "shape [32, 16] differs from K's [64, 8]");
}

TEST_CASE("errors: mask shape") {
  Inputs dir;
  write_file(dir.file("m.npy"), npy("|b1", "(63,)", std::string(63, '\1')));
  refused(dir, with_inputs("attend", {"--mask", "m.npy"}), "m.npy", "mask shape [63] is not [64] or [1, 64]");
}

TEST_CASE("errors: mask values other than 0/1") {
  Inputs dir;
  std::vector<int32_t> two(kN, 1);
  two[5] = 2;
  write_file(dir.file("m.npy"), npy("<i4", "(64,)", bytes_of(two)));
  refused(dir, with_inputs("attend", {"--mask", "m.npy"}), "m.npy", "mask value 2 at [5] is not 0 or 1");
  std::vector<float> half(kN, 1.0f);
  half[7] = 0.5f;
  write_file(dir.file("m.npy"), npy("<f4", "(1, 64)", bytes_of(half)));
  refused(dir, with_inputs("attend", {"--mask", "m.npy"}), "m.npy", "mask value 0.5 at [0, 7] is not 0 or 1");
  half[7] = std::numeric_limits<float>::quiet_NaN();
  write_file(dir.file("m.npy"), npy("<f4", "(64,)", bytes_of(half)));
  refused(dir, with_inputs("attend", {"--mask", "m.npy"}), "m.npy", "mask value nan at [7] is not 0 or 1");
}

// ------------------------------------------------------------------------------------------------ values
TEST_CASE("errors: NaN or Inf in Q, K or V") {
  Inputs dir;
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  const char* text[] = {"nan", "inf", "-inf"};
  for (const char* name : {"q.npy", "k.npy", "v.npy"}) {
    for (int i = 0; i < 3; ++i) {
      CAPTURE(name);
      CAPTURE(text[i]);
      Inputs fresh;
      std::vector<float> v = values(kN * kD);
      v[3 * kD + 5] = bad[i];
      replace(fresh, name, f32_npy({kN, kD}, v));
      refused(fresh, with_inputs("attend", {}), name, std::string("non-finite value ") + text[i] + " at [3, 5]");
      refused(fresh, {"exact", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy"}, name,
              std::string("non-finite value ") + text[i] + " at [3, 5]");
      // The files are refused as files: masking the bad row out does not make them acceptable.
      std::string mask(kN, '\1');
      mask[3] = '\0';
      write_file(fresh.file("m.npy"), npy("|b1", "(64,)", mask));
      refused(fresh, with_inputs("attend", {"--mask", "m.npy"}), name, std::string("non-finite value ") + text[i] + " at [3, 5]");
    }
  }
}

TEST_CASE("errors: float64 value beyond float32") {
  Inputs dir;
  std::vector<double> v(kN * kD, 1.0);
  v[9] = 1e300;
  replace(dir, "v.npy", npy("<f8", "(64, 8)", bytes_of(v)));
  refused(dir, with_inputs("attend", {}), "v.npy", "value 1e+300 at [1, 1] overflows float32");
}

// ------------------------------------------------------------------------------------------------ configuration
TEST_CASE("errors: budget larger than the number of blocks") {
  Inputs dir;
  // Not an error, for --budget (a count) and --blocks-per-row (a density) alike: a budget above the number of
  // candidates refines all of them (docs/semantics.md §2.4), so MRA equals exact attention.
  REQUIRE(mra_ref(dir, {"exact", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "-o", "exact.npy"}).status == 0);
  const std::vector<float> exact = read_f32(dir.file("exact.npy"));
  REQUIRE(exact.size() == size_t(kN * kD));
  for (const std::vector<std::string>& budget : {std::vector<std::string>{"--budget", "5"},
                                                 std::vector<std::string>{"--blocks-per-row", "1000"}}) {
    CAPTURE(budget[0]);
    std::vector<std::string> extra = budget;
    extra.insert(extra.end(), {"-o", "mra.npy"});
    REQUIRE(mra_ref(dir, with_inputs("attend", extra)).status == 0);
    const std::vector<float> mra = read_f32(dir.file("mra.npy"));
    REQUIRE(mra.size() == exact.size());
    for (size_t i = 0; i < mra.size(); ++i) CHECK(mra[i] == doctest::Approx(exact[i]).epsilon(1e-6));
  }
}

TEST_CASE("errors: scales that do not divide") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--scales", "32,3,1"}), "--scales", "scales: 3 does not divide 32");
}

TEST_CASE("errors: scales not decreasing or not ending at 1") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--scales", "32,2"}), "--scales", "scales: the last resolution must be 1");
  refused(dir, with_inputs("attend", {"--scales", "4,8,1"}), "--scales", "scales: must decrease strictly, got 4 then 8");
  refused(dir, with_inputs("attend", {"--scales", "1"}), "--scales", "scales: need at least two resolutions, the last one 1");
  refused(dir, with_inputs("attend", {"--scales", "0,1"}), "--scales", "'0' must be at least 1");
}

TEST_CASE("errors: wrong number of budgets") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--scales", "16,4,1", "--budget", "2"}), "--budget",
          "expected 2 value(s), one per refinement step of --scales, got 1");
}

TEST_CASE("errors: --budget with --blocks-per-row") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--budget", "1", "--blocks-per-row", "1"}), "--budget",
          "cannot be combined with --blocks-per-row");
}

TEST_CASE("errors: bad option values") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--mode", "dense"}), "--mode", "'dense' is not 'full' or 'sparse'");
  refused(dir, with_inputs("attend", {"--scale", "0"}), "--scale", "'0' must be positive");
  refused(dir, with_inputs("attend", {"--scale", "-1"}), "--scale", "'-1' must be positive");
  refused(dir, with_inputs("attend", {"--scale", "nan"}), "--scale", "'nan' is not a finite number");
  refused(dir, with_inputs("attend", {"--budget", "x"}), "--budget", "'x' is not an integer");
  refused(dir, with_inputs("attend", {"--budget", "-1"}), "--budget", "'-1' must be at least 0");
  refused(dir, with_inputs("attend", {"--prior-first", "99999999999999999999"}), "--prior-first",
          "'99999999999999999999' is out of range");
}

TEST_CASE("errors: bad command lines") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--bogus", "1"}), "--bogus", "unknown option");
  refused(dir, with_inputs("attend", {"--mode", "full", "--mode", "full"}), "--mode", "given more than once");
  refused(dir, with_inputs("attend", {"extra"}), "extra", "unexpected argument");
  refused(dir, {"attend", "--k", "k.npy", "--v", "v.npy"}, "--q", "required");
  refused(dir, {"frobnicate"}, "frobnicate", "unknown command (see mra-ref --help)");
  const Result r = mra_ref(dir, with_inputs("attend", {"-o"}));
  CHECK(r.status == 2);
  CHECK(r.err == "mra-ref: -o: missing value\n");
  // An option in the place of a value: blamed on the option that lost its value, not on what follows.
  refused(dir, {"attend", "-o", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy"}, "-o",
          "missing value (the next argument, '--q', is an option)");
  refused(dir, with_inputs("attend", {"--quiet=1"}), "--quiet", "takes no value");
  CHECK(mra_ref(dir, with_inputs("attend", {})).err == "mra-ref: -o: required\n");
}

TEST_CASE("errors: control characters in arguments") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"--mode", "a\nb"}), "--mode", "'a\\x0ab' is not 'full' or 'sparse'");
  refused(dir, with_inputs("attend", {}, "new\nline.npy"), "new\\x0aline.npy", "cannot open: No such file or directory");
  refused(dir, {"at\ttend"}, "at\\x09tend", "unknown command (see mra-ref --help)");
}

// ------------------------------------------------------------------------------------------------ output
TEST_CASE("errors: output folder missing") {
  Inputs dir;
  refused(dir, with_inputs("attend", {"-o", "absent/out.npy"}), "absent/out.npy",
          "cannot create a temporary file in 'absent/': No such file or directory");
  // Checked before anything else is read or computed: the output's error comes first even with a bad input.
  refused(dir, with_inputs("attend", {"-o", "absent/out.npy"}, "absent.npy"), "absent/out.npy",
          "cannot create a temporary file in 'absent/': No such file or directory");
}

TEST_CASE("errors: output path is a folder") {
  Inputs dir;
  std::filesystem::create_directory(dir.file("out"));
  refused(dir, with_inputs("attend", {"-o", "out"}), "out", "is a folder, not a file");
}

TEST_CASE("errors: output folder not writable") {
  Inputs dir;
  // A file where the folder should be: refused for every user, root included.
  refused(dir, with_inputs("attend", {"-o", "q.npy/out.npy"}), "q.npy/out.npy",
          "cannot create a temporary file in 'q.npy/': Not a directory");
  // Permissions do not stop root, so the read-only folder is only a test for other users.
  if (::geteuid() != 0) {
    std::filesystem::create_directory(dir.file("locked"));
    ::chmod(dir.file("locked").c_str(), 0555);
    refused(dir, with_inputs("attend", {"-o", "locked/out.npy"}), "locked/out.npy",
            "cannot create a temporary file in 'locked/': Permission denied");
    ::chmod(dir.file("locked").c_str(), 0755);
  }
}

TEST_CASE("errors: output replaced atomically") {
  Inputs dir;
  write_file(dir.file("out.npy"), "an earlier result");
  REQUIRE(mra_ref(dir, with_inputs("attend", {"-o", "out.npy"})).status == 0);
  CHECK(read_f32(dir.file("out.npy")).size() == size_t(kN * kD));
  CHECK(dir.names() == std::set<std::string>{"k.npy", "out.npy", "q.npy", "v.npy"});
}
