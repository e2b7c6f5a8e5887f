// tests/errors/hostile_cli_test.cpp: mra-ref under hostile use (docs/errors.md, the rows that name these tests):
// outputs that are devices, FIFOs or symbolic links, float32 overflow in either backend, write errors on
// stdout, block sides and scales that overflow, signals during a write, integers beyond 2^53 in compare, and
// inputs that never end. Each case failed on commit 10bdf01; MRA_REF_UNDER_TEST=<old mra-ref> runs them
// against another build (harness.h).
//   ctest --test-dir build -L cli -R errors      or      build/tests/errors/hostile_cli_test
#include "common/doctest.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "harness.h"

extern char** environ;

using namespace errors_test;

namespace {

constexpr int64_t kN = 64, kD = 32;

// A folder holding q.npy, k.npy and v.npy of shape [64, 32] (D = 32 has a generated f32 MRA-2 kernel).
struct Inputs : InputFolder {
  Inputs() : InputFolder(kN, kD) {}
};

bool is_output_of_shape(const std::string& bytes, size_t floats) {
  return bytes.size() > 10 && bytes.compare(0, 6, "\x93NUMPY") == 0 &&
         bytes.size() == 10 + (size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8) + 4 * floats;
}

// Writes `head` and then up to `chunks` blocks of 64 KB of zeros into the FIFO `path` from a thread, until the
// reader goes away; gives up if no reader opens the FIFO within a minute.
std::thread feed(const std::string& path, const std::string& head, int chunks) {
  std::signal(SIGPIPE, SIG_IGN);  // a reader that stops early is the point of these tests
  return std::thread([path, head, chunks] {
    int fd = -1;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (fd < 0 && std::chrono::steady_clock::now() < until) {
      fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (fd < 0) return;
    ::fcntl(fd, F_SETFL, 0);  // blocking from here on
    const std::string zeros(1 << 16, '\0');
    bool ok = ::write(fd, head.data(), head.size()) == ssize_t(head.size());
    for (int i = 0; ok && i < chunks; ++i) ok = ::write(fd, zeros.data(), zeros.size()) > 0;
    ::close(fd);
  });
}

mode_t type_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & S_IFMT;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ failure 1
TEST_CASE("errors: output onto a device, FIFO or symbolic link") {
  Inputs dir;
  SUBCASE("a character device is written through, never replaced") {
    // Root could replace any device, so root gets a null device of its own rather than /dev/null.
    const bool root = ::geteuid() == 0;
    const std::string device = root ? dir.file("null") : "/dev/null";
    if (root) REQUIRE(::mknod(device.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    const Result r = mra_ref(dir, with_inputs("attend", {"-o", device}));
    CHECK(r.status == 0);
    CHECK(type_of(device) == S_IFCHR);
    std::set<std::string> expected{"k.npy", "q.npy", "v.npy"};
    if (root) expected.insert("null");
    CHECK(dir.names() == expected);
  }
  SUBCASE("a FIFO is written through: the reader gets the whole array") {
    REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
    // Opened for reading first, without blocking, so that the writer's open succeeds; the array fits in the
    // pipe's buffer, so the run completes before anything is read.
    const int reader = ::open(dir.file("fifo").c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(reader >= 0);
    const Result r = mra_ref(dir, with_inputs("exact", {"-o", "fifo"}));
    CHECK(r.status == 0);
    std::string got(1 << 16, '\0');
    const ssize_t n = ::read(reader, got.data(), got.size());
    ::close(reader);
    got.resize(n > 0 ? size_t(n) : 0);
    CHECK(is_output_of_shape(got, size_t(kN * kD)));
    CHECK(type_of(dir.file("fifo")) == S_IFIFO);
  }
  SUBCASE("a symbolic link stays a link; its target is replaced and keeps its permissions") {
    write_file(dir.file("target.npy"), "an earlier result");
    ::chmod(dir.file("target.npy").c_str(), 0640);
    std::filesystem::create_symlink("target.npy", dir.file("link.npy"));
    const Result r = mra_ref(dir, with_inputs("attend", {"-o", "link.npy"}));
    CHECK(r.status == 0);
    CHECK(type_of(dir.file("link.npy")) == S_IFLNK);
    CHECK(is_output_of_shape(read_file(dir.file("target.npy")), size_t(kN * kD)));
    struct stat st {};
    REQUIRE(::stat(dir.file("target.npy").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(dir.names() == std::set<std::string>{"k.npy", "link.npy", "q.npy", "target.npy", "v.npy"});
  }
  SUBCASE("an existing file keeps its permissions") {
    write_file(dir.file("out.npy"), "an earlier result");
    ::chmod(dir.file("out.npy").c_str(), 0600);
    REQUIRE(mra_ref(dir, with_inputs("exact", {"-o", "out.npy"})).status == 0);
    struct stat st {};
    REQUIRE(::stat(dir.file("out.npy").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
  }
  SUBCASE("a dangling or looping symbolic link, a socket and a block device are refused") {
    std::filesystem::create_symlink("absent/target.npy", dir.file("dangling.npy"));
    check_refused(dir, with_inputs("exact", {"-o", "dangling.npy"}),
            "dangling.npy: a symbolic link to a missing file (No such file or directory)");
    std::filesystem::create_symlink("loop.npy", dir.file("loop.npy"));
    check_refused(dir, with_inputs("exact", {"-o", "loop.npy"}),
            "loop.npy: a symbolic link that cannot be followed (Too many levels of symbolic links)");
    if (::geteuid() == 0) {
      // A loop device node of our own: root could otherwise write onto a disk.
      REQUIRE(::mknod(dir.file("disk").c_str(), S_IFBLK | 0600, makedev(7, 0)) == 0);
      check_refused(dir, with_inputs("exact", {"-o", "disk"}), "disk: is a block device: writing an array onto a disk is refused");
    }
  }
}

// ------------------------------------------------------------------------------------------------ failures 2, 5
TEST_CASE("errors: float32 overflow in logits or sums") {
  Inputs dir;
  SUBCASE("logits beyond float32 are refused by both backends alike") {
    std::vector<float> q = values(kN * kD, 0.0f), k = values(kN * kD, 1.0f);
    for (float& x : q) x *= 1e20f;
    for (int64_t d = 0; d < kD; ++d) k[size_t(5 * kD + d)] *= 1e20f;  // one key
    write_file(dir.file("q.npy"), f32_npy({kN, kD}, q));
    write_file(dir.file("k.npy"), f32_npy({kN, kD}, k));
    for (const std::string backend : {"reference", "emulated"}) {
      CAPTURE(backend);
      const Result r = mra_ref(dir, with_inputs("attend", {"--backend", backend, "-o", "out.npy"}));
      CHECK(r.status == 2);
      CHECK(r.err.rfind("mra-ref: q.npy: logits with k.npy reach ", 0) == 0);
      CHECK(r.err.find("(limit 4.25e+37, the float32 range the kernels compute in)") != std::string::npos);
      CHECK(r.err.find("k [5] of norm") != std::string::npos);
      CHECK_FALSE(std::filesystem::exists(dir.file("out.npy")));
    }
  }
  SUBCASE("a scale that overflows double (failure 5)") {
    write_file(dir.file("q.npy"), f32_npy({kN, kD}, std::vector<float>(size_t(kN * kD), 1e30f)));
    write_file(dir.file("k.npy"), f32_npy({kN, kD}, std::vector<float>(size_t(kN * kD), 1e30f)));
    const Result r = mra_ref(dir, with_inputs("attend", {"--scale", "1e300", "-o", "out.npy"}));
    CHECK(r.status == 2);
    CHECK(r.err.rfind("mra-ref: q.npy: logits with k.npy reach inf (limit 4.25e+37", 0) == 0);
    // The same inputs' logits with a reasonable scale are still beyond float32; modest inputs with a huge
    // scale name the scale.
    write_file(dir.file("q.npy"), f32_npy({kN, kD}, values(kN * kD, 0.0f)));
    write_file(dir.file("k.npy"), f32_npy({kN, kD}, values(kN * kD, 1.0f)));
    const Result s = mra_ref(dir, with_inputs("exact", {"--scale", "1e300", "-o", "out.npy"}));
    CHECK(s.status == 2);
    CHECK(s.err.rfind("mra-ref: --scale: '1e300' makes logits reach ", 0) == 0);
    CHECK_FALSE(std::filesystem::exists(dir.file("out.npy")));
  }
  SUBCASE("sums of values beyond float32") {
    write_file(dir.file("v.npy"), f32_npy({kN, kD}, std::vector<float>(size_t(kN * kD), 1e37f)));
    check_refused(dir, with_inputs("attend", {"-o", "out.npy"}),
            "v.npy: sums of up to 64 values reach 6.4e+38 (limit 4.25e+37, the float32 range the kernels compute in)");
  }
  SUBCASE("large logits within the bound stay finite in both backends") {
    std::vector<float> q = values(kN * kD, 0.0f);
    for (float& x : q) x *= 1e3f;
    write_file(dir.file("q.npy"), f32_npy({kN, kD}, q));
    for (const std::string backend : {"reference", "emulated"}) {
      CAPTURE(backend);
      REQUIRE(mra_ref(dir, with_inputs("attend", {"--backend", backend, "-o", "out.npy"})).status == 0);
      const std::vector<float> out = read_f32(dir.file("out.npy"));
      REQUIRE(out.size() == size_t(kN * kD));
      size_t nonzero = 0;
      for (float x : out) {
        CHECK(std::isfinite(x));
        nonzero += x != 0.0f;
      }
      CHECK(nonzero > out.size() / 2);
    }
  }
}

// ------------------------------------------------------------------------------------------------ failure 3
TEST_CASE("errors: write errors on stdout") {
  Inputs dir;
  REQUIRE(std::filesystem::exists("/dev/full"));
  const std::string no_space = "mra-ref: stdout: cannot write: No space left on device\n";
  for (const std::vector<std::string>& args :
       {with_inputs("select", {}), with_inputs("attend", {"-o", "-"}), with_inputs("exact", {"-o", "out.npy"}),
        std::vector<std::string>{"compare", "q.npy", "k.npy"}, std::vector<std::string>{"--help"},
        std::vector<std::string>{"select", "--help"}}) {
    CAPTURE(args[0]);
    const Result r = mra_ref(dir, args, "/dev/full");
    CHECK(r.status == 2);
    CHECK(r.err == no_space);
  }
  // A reader that goes away: the pipe breaks while the 4 MB array is written (more than a pipe holds).
  {
    write_file(dir.file("big.npy"), f32_npy({32768, kD}, std::vector<float>(size_t(32768 * kD), 0.5f)));
    const std::string command = "cd " + quote(dir.file("")) + " && (" + quote(binary()) +
                                " exact --q big.npy --k k.npy --v v.npy -o - 2>err.txt; echo $? >status.txt) | true";
    REQUIRE(std::system(command.c_str()) == 0);
    CHECK(read_file(dir.file("status.txt")) == "2\n");
    CHECK(read_file(dir.file("err.txt")) == "mra-ref: stdout: cannot write: Broken pipe\n");
  }
  // Started with stdout closed: the files the run opens must not take its place, and the output is an error.
  const Result closed = mra_ref(dir, with_inputs("attend", {"-o", "-"}), "closed");
  CHECK(closed.status == 2);
  CHECK(closed.err == "mra-ref: stdout: cannot write: Bad file descriptor\n");
  const Result select = mra_ref(dir, with_inputs("select", {}), "closed");
  CHECK(select.status == 2);
  CHECK(select.err == "mra-ref: stdout: cannot write: Bad file descriptor\n");
}

// ------------------------------------------------------------------------------------------------ failures 4, 8
TEST_CASE("errors: block sides beyond the largest") {
  Inputs dir;
  check_refused(dir, with_inputs("attend", {"--scales", "576460752303423488,2,1", "--blocks-per-row", "1000", "-o", "o.npy"}),
          "--scales: scales: 576460752303423488 is above the largest block side, 1048576");
  check_refused(dir, with_inputs("select", {"--scales", "9223372036854775807,1"}),
          "--scales: scales: 9223372036854775807 is above the largest block side, 1048576");
  // The largest side is valid, three levels deep, and every product stays in range: with every block refined
  // MRA equals exact attention.
  REQUIRE(mra_ref(dir, with_inputs("attend", {"--scales", "1048576,2,1", "--blocks-per-row", "1000", "-o", "m.npy"}))
              .status == 0);
  REQUIRE(mra_ref(dir, with_inputs("exact", {"-o", "e.npy"})).status == 0);
  const std::vector<float> mra = read_f32(dir.file("m.npy")), exact = read_f32(dir.file("e.npy"));
  REQUIRE(mra.size() == size_t(kN * kD));
  REQUIRE(exact.size() == mra.size());
  for (size_t i = 0; i < mra.size(); ++i) CHECK(std::fabs(mra[i] - exact[i]) <= 1e-6f + 1e-6f * std::fabs(exact[i]));
  const Result s = mra_ref(dir, with_inputs("select", {"--scales", "1048576,2,1", "--budget", "1,3"}));
  REQUIRE(s.status == 0);
  CHECK(s.out.find("\"level\": 1, \"side\": 1048576, \"nk_blocks\": 1, \"blocks\": [0]") != std::string::npos);
  const size_t level2 = s.out.find("\"level\": 2, \"side\": 2, \"nk_blocks\": 32, \"blocks\": [");
  REQUIRE(level2 != std::string::npos);
  const std::string blocks = s.out.substr(level2, s.out.find(']', level2) - level2);
  CHECK(std::count(blocks.begin(), blocks.end(), ',') == 2 + 3);  // three blocks after three other fields
}

// ------------------------------------------------------------------------------------------------ failure 6
TEST_CASE("errors: a signal during the write leaves no temporary file") {
  // A 32 MB output (131072 queries, one key): long enough to catch the temporary file on disk.
  Scratch dir;
  constexpr int64_t nq = 131072, d = 64;
  write_file(dir.file("q.npy"), f32_npy({nq, d}, std::vector<float>(size_t(nq * d), 0.5f)));
  write_file(dir.file("k.npy"), f32_npy({1, d}, std::vector<float>(size_t(d), 0.25f)));
  write_file(dir.file("v.npy"), f32_npy({1, d}, std::vector<float>(size_t(d), 1.0f)));
  const std::string program = binary();
  for (const int signal : {SIGTERM, SIGINT, SIGHUP}) {
    CAPTURE(signal);
    const std::vector<std::string> args{program, "exact", "--q", dir.file("q.npy"), "--k", dir.file("k.npy"),
                                        "--v", dir.file("v.npy"), "-o", dir.file("out.npy")};
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), environ) == 0);
    const auto temporary = [&dir] {
      for (const std::string& name : dir.names())
        if (name.rfind(".mra-ref-", 0) == 0) return true;
      return false;
    };
    bool seen = false;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int status = 0;
    while (!seen && std::chrono::steady_clock::now() < until && ::waitpid(pid, &status, WNOHANG) == 0) {
      seen = temporary();
      if (!seen) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (seen) {
      ::kill(pid, signal);
      ::waitpid(pid, &status, 0);
    }
    REQUIRE(seen);  // the run ended (or timed out) before its temporary file was seen
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == signal);
    CHECK_FALSE(temporary());
    CHECK_FALSE(std::filesystem::exists(dir.file("out.npy")));
  }
}

// ------------------------------------------------------------------------------------------------ failure 7
TEST_CASE("errors: compare of integers beyond 2^53") {
  Scratch dir;
  const int64_t big = int64_t(1) << 62;
  write_file(dir.file("a.npy"), npy("<i8", "(2,)", bytes_of(std::vector<int64_t>{7, big + 1})));
  write_file(dir.file("b.npy"), npy("<i8", "(2,)", bytes_of(std::vector<int64_t>{7, big})));
  check_refused(dir, {"compare", "a.npy", "b.npy", "--atol", "0"},
          "a.npy: integer at [1] is beyond 2^53, which compare cannot represent exactly");
  // Within 2^53 integers are exact, and a difference of 1 fails a zero tolerance.
  const int64_t exact = int64_t(1) << 52;
  write_file(dir.file("a.npy"), npy("<i8", "(2,)", bytes_of(std::vector<int64_t>{7, exact + 1})));
  write_file(dir.file("b.npy"), npy("<i8", "(2,)", bytes_of(std::vector<int64_t>{7, exact})));
  const Result r = mra_ref(dir, {"compare", "a.npy", "b.npy", "--atol", "0"});
  CHECK(r.status == 1);
  CHECK(r.out.find("FAIL: |A-B| <= 0 + 0*|B| fails for 1 of 2 elements") != std::string::npos);
}

// ------------------------------------------------------------------------------------------------ failure 9
TEST_CASE("errors: inputs that never end") {
  Inputs dir;
  // Under a 1 GB address-space limit, so that reading on would fail rather than exhaust the machine (not for
  // a sanitized build, whose shadow memory needs terabytes of address space: there only the time is limited).
#ifdef MRA_SANITIZED
  const std::string limited = "timeout 60 ";
#else
  const std::string limited = "ulimit -v 1000000; timeout 60 ";
#endif
  check_refused(dir, {"attend", "--q", "/dev/zero", "--k", "k.npy", "--v", "v.npy", "-o", "out.npy"},
          "/dev/zero: not a .npy file (bad magic string)", limited);
  SUBCASE("a stream past its declared size") {
    // A valid header followed by endless data through a FIFO: read up to the declared bytes and one more.
    REQUIRE(::mkfifo(dir.file("endless").c_str(), 0600) == 0);
    std::thread writer = feed(dir.file("endless"), npy("<f4", "(64, 32)", ""), 1 << 14);  // up to 1 GB
    check_refused(dir, {"attend", "--q", "endless", "--k", "k.npy", "--v", "v.npy", "-o", "out.npy"},
            "endless: size mismatch: the shape needs 2048 elements of 4 bytes, the file holds more than 8192 data bytes",
            limited);
    writer.join();
  }
  SUBCASE("a stream with an endless header") {
    REQUIRE(::mkfifo(dir.file("header").c_str(), 0600) == 0);
    std::thread writer = feed(dir.file("header"), std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12), 1 << 15);
    check_refused(dir, {"attend", "--q", "header", "--k", "k.npy", "--v", "v.npy", "-o", "out.npy"},
            "header: the header claims 4294967295 bytes, more than the 1048576 this reader accepts", limited);
    writer.join();
  }
#ifndef MRA_SANITIZED
  SUBCASE("a stream that declares more than memory holds") {
    REQUIRE(::mkfifo(dir.file("huge").c_str(), 0600) == 0);
    std::thread writer = feed(dir.file("huge"), npy("<f4", "(1000000000, 32)", ""), 1 << 15);  // up to 2 GB
    check_refused(dir, {"attend", "--q", "huge", "--k", "k.npy", "--v", "v.npy", "-o", "out.npy"},
            "huge: out of memory while reading the array its header declares", limited);
    writer.join();
  }
#endif
}

// ------------------------------------------------------------------------------------------------ beyond the issue
// Found by further hostile use after the nine failures above; each case failed on commit b86fe35.
TEST_CASE("errors: an output that names an input, and odd arguments") {
  Inputs dir;
  const std::string q_before = read_file(dir.file("q.npy"));
  SUBCASE("an output that is one of the inputs is refused, the input kept") {
    check_refused(dir, with_inputs("attend", {"-o", "q.npy"}),
                  "-o: 'q.npy' is the file --q reads ('q.npy'): the output would replace an input; write it elsewhere");
    check_refused(dir, with_inputs("exact", {"-o", "./v.npy"}),
                  "-o: './v.npy' is the file --v reads ('v.npy'): the output would replace an input; write it "
                  "elsewhere");
    std::filesystem::create_symlink("k.npy", dir.file("alias.npy"));
    check_refused(dir, with_inputs("select", {"-o", "alias.npy"}),
                  "-o: 'alias.npy' is the file --k reads ('k.npy'): the output would replace an input; write it "
                  "elsewhere");
    check_refused(dir, with_inputs("grad", {"--dout", "v.npy", "--dq", "a.npy", "--dk", "q.npy", "--dv", "c.npy"}),
                  "--dk: 'q.npy' is the file --q reads ('q.npy'): the output would replace an input; write it "
                  "elsewhere");
    // An archive would lose its other arrays: writing array 'out' into the .npz that holds q is refused too.
    REQUIRE(mra_ref(dir, with_inputs("exact", {"-o", "in.npz:q"})).status == 0);
    const std::string archive = read_file(dir.file("in.npz"));
    check_refused(dir, with_inputs("attend", {"-o", "in.npz:out"}, "in.npz"),
                  "-o: 'in.npz:out' is the file --q reads ('in.npz'): the output would replace an input; write it "
                  "elsewhere");
    CHECK(read_file(dir.file("in.npz")) == archive);
    CHECK(read_file(dir.file("q.npy")) == q_before);
  }
  SUBCASE("a read-only file is not replaced") {
    // Root may write anything: it runs the check as nobody (the folder open to all, so that only the file's
    // own permission stops the write).
    std::string as_user;
    if (::geteuid() == 0) {
      if (std::system("command -v setpriv >/dev/null") != 0) return;
      as_user = "setpriv --reuid 65534 --regid 65534 --clear-groups ";
      ::chmod(dir.file("").c_str(), 0777);
    }
    write_file(dir.file("locked.npy"), "an earlier result");
    ::chmod(dir.file("locked.npy").c_str(), 0444);
    check_refused(dir, with_inputs("exact", {"-o", "locked.npy"}),
                  "locked.npy: cannot write: Permission denied (a read-only file is not replaced)", as_user);
    CHECK(read_file(dir.file("locked.npy")) == "an earlier result");
  }
  SUBCASE("empty values, '--', '-' for standard input, extra arguments") {
    check_refused(dir, {"attend", "--q=", "--k", "k.npy", "--v", "v.npy", "-o", "o.npy"}, "--q: empty value");
    check_refused(dir, with_inputs("attend", {"-o", ""}), "-o: empty value");
    check_refused(dir, {"compare", "", "q.npy"}, "'': cannot open: No such file or directory");
    check_refused(dir, with_inputs("attend", {"--", "-o", "o.npy"}), "-o: unexpected argument");
    check_refused(dir, {"--version", "extra"}, "extra: unexpected argument");
    check_refused(dir, with_inputs("select", {"--backend", "emulated"}),
                  "--backend: is not an option of select, which prints the reference's selection (the kernels "
                  "select the same blocks)");
    // After '--' a name starting with '-' is a file.
    write_file(dir.file("-q.npy"), q_before);
    const Result dashed = mra_ref(dir, {"compare", "--atol", "0", "--", "-q.npy", "q.npy"});
    CHECK(dashed.status == 0);
    CHECK(dashed.out.find("PASS") != std::string::npos);
    // '-' is standard input, for one option.
    const Result piped = mra_ref(dir, with_inputs("exact", {"-o", "o.npy"}, "-"), "", "<q.npy ");
    CHECK(piped.status == 0);
    CHECK(read_f32(dir.file("o.npy")).size() == size_t(kN * kD));
    check_refused(dir, with_inputs("exact", {"-o", "p.npy"}, "-", "-"),
                  "-: standard input is already read by another option", "<q.npy ");
  }
  SUBCASE("another name of stdout is stdout") {
    // Into a pipe: the array alone, the summary line on stderr (not appended to the array).
    const std::string run = "cd " + quote(dir.file("")) + " && " + quote(binary()) +
                            " exact --q q.npy --k k.npy --v v.npy -o /dev/stdout";
    REQUIRE(std::system((run + " 2>err.txt | cat >piped.npy").c_str()) == 0);
    CHECK(is_output_of_shape(read_file(dir.file("piped.npy")), size_t(kN * kD)));
    CHECK(read_file(dir.file("err.txt")) == "wrote /dev/stdout [64, 32]: exact attention\n");
    // Appended to a file (>>): the earlier contents stay, the array follows them.
    write_file(dir.file("log.bin"), "earlier");
    REQUIRE(std::system((run + " 2>err.txt >>log.bin").c_str()) == 0);
    const std::string log = read_file(dir.file("log.bin"));
    CHECK(log.rfind("earlier", 0) == 0);
    CHECK(is_output_of_shape(log.substr(std::min(log.size(), size_t(7))), size_t(kN * kD)));
  }
  SUBCASE("the summary line stays one line whatever the output's name") {
    const Result r = mra_ref(dir, with_inputs("exact", {"-o", "a\nb.npy"}));
    CHECK(r.status == 0);
    CHECK(r.out == "wrote a\\x0ab.npy [64, 32]: exact attention\n");
  }
}
