// tools/mra-ref/output.cpp: the output of mra-ref's commands (see output.h). Tested by tests/cli and tests/errors.
#include "output.h"

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mra::npy {
namespace {

// The temporary file a signal must remove. A process writes one output at a time; the handler reads only
// this buffer and the flag, both set before the flag is raised, and calls only unlink, signal and raise.
char g_tmp[PATH_MAX + 64];
volatile std::sig_atomic_t g_armed = 0;
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
struct sigaction g_previous[sizeof kSignals / sizeof kSignals[0]];

extern "C" void remove_temporary_and_die(int signal) {
  if (g_armed) ::unlink(g_tmp);
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

// The signals of kSignals, as a set to block while the temporary file is created and registered.
sigset_t signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (const int s : kSignals) sigaddset(&set, s);
  return set;
}

// Registers `tmp` for removal on a signal; called with the signals blocked, so that none arrives between the
// file's creation and its registration.
void arm(const std::string& tmp) {
  std::memcpy(g_tmp, tmp.c_str(), tmp.size() + 1);
  g_armed = 1;
  struct sigaction action {};
  action.sa_handler = remove_temporary_and_die;
  sigemptyset(&action.sa_mask);
  for (size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) ::sigaction(kSignals[i], &action, &g_previous[i]);
}

void disarm() {
  g_armed = 0;
  for (size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
}

std::string errno_text() { return std::strerror(errno); }

// Writes all of `bytes` to `fd`; returns "" or why not.
std::string write_all(int fd, std::string_view bytes) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_text();
    if (n == 0) return "no progress";
    written += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

Output::Output(const std::string& path) {
  if (path == "-") {
    stdout_ = true;
    return;
  }
  if (path.empty()) {
    error_ = "an empty output path";
    return;
  }
  // /dev/stdout, /proc/self/fd/1 or any other name of this process's stdout (a pipe, a socket or a file; a
  // device such as /dev/null is written through below) is stdout: the summary line then goes to stderr
  // instead of into the same pipe, and a file stdout appends to (>>) is written at its position, not replaced.
  struct stat st {}, out {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && !S_ISCHR(st.st_mode) && ::fstat(STDOUT_FILENO, &out) == 0 && out.st_dev == st.st_dev &&
      out.st_ino == st.st_ino) {
    stdout_ = true;
    return;
  }
  // A symbolic link to a file is followed: the temporary goes next to the file it names, which the rename
  // replaces. A link to anything else is written through as it stands (/proc/self/fd/N of a pipe names no path).
  target_ = path;
  struct stat link {};
  if (::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode) && !(exists && !S_ISREG(st.st_mode))) {
    char* resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr) {
      error_ = std::string(errno == ENOENT ? "a symbolic link to a missing file" : "a symbolic link that cannot be "
                                                                                    "followed") +
               " (" + errno_text() + ")";
      return;
    }
    target_ = resolved;
    std::free(resolved);
  }
  if (exists && S_ISDIR(st.st_mode)) {
    error_ = "is a folder, not a file";
    return;
  }
  if (exists && S_ISBLK(st.st_mode)) {
    error_ = "is a block device: writing an array onto a disk is refused";
    return;
  }
  if (exists && S_ISSOCK(st.st_mode)) {
    error_ = "is a socket, not a file";
    return;
  }
  // A write-protected file is not replaced, as `cp` and `>` would not (the rename alone would let it be).
  if (exists && S_ISREG(st.st_mode) && ::access(target_.c_str(), W_OK) != 0) {
    error_ = "cannot write: " + errno_text() + " (a read-only file is not replaced)";
    return;
  }
  if (exists && !S_ISREG(st.st_mode)) {
    // A character device or FIFO is written through: replacing it would destroy it (as root, /dev/null too).
    through_ = true;
    fd_ = ::open(target_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0) error_ = "cannot open for writing: " + errno_text();
    return;
  }
  const size_t slash = target_.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "./" : target_.substr(0, slash + 1);
  // O_EXCL with a per-process name never clobbers another writer's file; a new file gets the umask's
  // permissions, an existing one keeps its own.
  const sigset_t blocked = signal_set();
  sigset_t previous;
  ::sigprocmask(SIG_BLOCK, &blocked, &previous);
  for (int attempt = 0; fd_ < 0 && attempt < 100; ++attempt) {
    tmp_ = folder + ".mra-ref-" + std::to_string(::getpid()) + "-" + std::to_string(attempt) + ".tmp";
    if (tmp_.size() >= sizeof g_tmp) {
      errno = ENAMETOOLONG;
      break;
    }
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) {
    error_ = "cannot create a temporary file in '" + folder + "': " + errno_text();
    tmp_.clear();
  } else {
    arm(tmp_);
  }
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (fd_ < 0) return;
  // Read and write bits only: a set-user-ID bit must not pass to a file this process wrote.
  if (exists && ::fchmod(fd_, st.st_mode & 0777) != 0) error_ = "cannot set the permissions: " + errno_text();
}

Output::~Output() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) {
    ::unlink(tmp_.c_str());
    disarm();
  }
}

std::string Output::commit(std::string_view bytes) {
  if (!error_.empty()) return error_;
  if (stdout_) {
    // Checked here and again when main closes stdout: a full disk or a closed pipe is an error, not exit 0.
    if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() || std::fflush(stdout) != 0)
      return "cannot write: " + errno_text();
    return {};
  }
  std::string why = write_all(fd_, bytes);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && why.empty()) why = errno_text();
  if (!why.empty()) return "cannot write: " + why;
  if (through_) return {};
  if (std::rename(tmp_.c_str(), target_.c_str()) != 0) return "cannot write: " + errno_text();
  tmp_.clear();
  disarm();
  return {};
}

}  // namespace mra::npy
