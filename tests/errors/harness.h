// tests/errors/harness.h: what the tests of tests/errors share: a scratch folder per test, .npy files written
// byte by byte (independently of the writer under test), and runs of the mra-ref binary with their exit
// status and output, a folder of valid inputs, and the check of a refused run. Used by errors_cli_test.cpp,
// hostile_cli_test.cpp and numerics_cli_test.cpp (ctest -L cli).
#pragma once

#include "common/doctest.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace errors_test {

namespace fs = std::filesystem;

class Scratch {
 public:
  Scratch() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("mra-errors-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~Scratch() { fs::remove_all(path_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Every name in the folder, so that a test sees any file a failed run left behind (temporaries included).
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.insert(e.path().filename().string());
    return out;
  }

 private:
  fs::path path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// A version 1.0 .npy file: `descr` and `shape` ("(2, 3)") go into the header as given, `data` follows.
inline std::string npy(const std::string& descr, const std::string& shape, const std::string& data,
                       const std::string& fortran = "False") {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  return out + h + data;
}

template <class T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
  return s + ")";
}

inline std::string f32_npy(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  return npy("<f4", shape_text(shape), bytes_of(values));
}

// The float32 values of a version 1.0 <f4 file as mra-ref writes it; empty if it is not one.
inline std::vector<float> read_f32(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) != 0) return {};
  const size_t header = size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8;
  if (bytes.find("'<f4'") > 10 + header || (bytes.size() - 10 - header) % 4 != 0) return {};
  std::vector<float> out((bytes.size() - 10 - header) / 4);
  std::memcpy(out.data(), bytes.data() + 10 + header, out.size() * 4);
  return out;
}

struct Result {
  int status = -1;
  std::string out, err;
};

inline std::string quote(const std::string& s) {
  std::ostringstream q;
  q << '\'';
  for (char c : s) {
    if (c == '\'')
      q << "'\\''";
    else
      q << c;
  }
  q << '\'';
  return q.str();
}

// The binary under test: the build's mra-ref, or the one MRA_REF_UNDER_TEST names (to show that a test fails on
// an older build: MRA_REF_UNDER_TEST=/path/to/old/mra-ref build/tests/errors/hostile_cli_test).
inline std::string binary() {
  const char* other = std::getenv("MRA_REF_UNDER_TEST");
  return other != nullptr && *other != '\0' ? other : MRA_REF_BINARY;
}

// Runs mra-ref with `args` in the scratch folder; `stdout_to` replaces the capture of stdout (a path such as
// /dev/full, or "closed" to start it with stdout closed) and `prefix` is shell text run before it (e.g. "ulimit -v 1000000;").
inline Result mra_ref(const Scratch& dir, const std::vector<std::string>& args, const std::string& stdout_to = "",
                      const std::string& prefix = "") {
  const std::string out = dir.file(".stdout"), err = dir.file(".stderr");
  // A stream rather than string concatenation: g++ 12 -O3 reports a false -Wrestrict on the latter.
  std::ostringstream command;
  command << "cd " << quote(dir.file("")) << " && " << prefix << quote(binary());
  for (const std::string& a : args) command << ' ' << quote(a);
  if (stdout_to == "closed")
    command << " >&-";
  else
    command << " >" << quote(stdout_to.empty() ? out : stdout_to);
  command << " 2>" << quote(err);
  const int raw = std::system(command.str().c_str());
  Result r{WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw), read_file(out), read_file(err)};
  fs::remove(out);
  fs::remove(err);
  return r;
}

// Smooth, distinct, finite values of both signs: sin(0.37 i + offset).
inline std::vector<float> values(int64_t count, float offset = 0.0f) {
  std::vector<float> v(static_cast<size_t>(count));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * float(i) + offset);
  return v;
}

// A scratch folder holding valid q.npy, k.npy and v.npy of shape [n, d], each with its own values.
struct InputFolder : Scratch {
  InputFolder(int64_t n, int64_t d) {
    write_file(file("q.npy"), f32_npy({n, d}, values(n * d, 0.0f)));
    write_file(file("k.npy"), f32_npy({n, d}, values(n * d, 1.0f)));
    write_file(file("v.npy"), f32_npy({n, d}, values(n * d, 2.0f)));
  }
};

// The arguments `<command> --q <q> --k <k> --v <v>` followed by `extra`.
inline std::vector<std::string> with_inputs(const std::string& command, const std::vector<std::string>& extra,
                                            const std::string& q = "q.npy", const std::string& k = "k.npy",
                                            const std::string& v = "v.npy") {
  std::vector<std::string> args{command, "--q", q, "--k", k, "--v", v};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The run is refused: status 2, exactly the line "mra-ref: <line>" on stderr, nothing on stdout, and the folder
// as it was (no output, no temporary). `prefix` as for mra_ref.
inline void check_refused(const Scratch& dir, const std::vector<std::string>& args, const std::string& line,
                          const std::string& prefix = "") {
  const std::set<std::string> before = dir.names();
  const Result r = mra_ref(dir, args, "", prefix);
  CHECK(r.status == 2);
  CHECK(r.err == "mra-ref: " + line + "\n");
  CHECK(r.out.empty());
  CHECK(dir.names() == before);
}

}  // namespace errors_test
