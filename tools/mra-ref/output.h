// tools/mra-ref/output.h: where a command's output goes (part of mra::npy). The output is opened before any
// work, so that a bad path fails in a second rather than after the computation, and written in one piece at
// the end:
//   "-"                            standard output (and so is any other name of this process's stdout:
//                                  /dev/stdout, /proc/self/fd/1);
//   an existing character device or FIFO (or a symbolic link to one): written through, the node is kept
//   (a block device, a disk, and a socket are refused);
//   anything else (a regular file, a new name, a symbolic link to either): a temporary file in the target's
//   folder, renamed over the target when complete. An existing file keeps its rwx permission bits (not its
//   owner or hard links, as after any rename); a symbolic link keeps pointing at the same, now replaced, file.
//   A file the user may not write (access(2)) is refused, not replaced.
// SIGINT, SIGTERM, SIGHUP and SIGQUIT remove the temporary before the process ends. Tested by tests/cli and
// tests/errors (ctest -L cli).
#pragma once

#include <string>
#include <string_view>

namespace mra::npy {

class Output {
 public:
  // Opens `path`; error() says why when it cannot be written (then commit() writes nothing).
  explicit Output(const std::string& path);
  ~Output();  // removes the temporary file unless commit() succeeded
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  const std::string& error() const { return error_; }
  bool to_stdout() const { return stdout_; }

  // Writes `bytes` and completes the output (flush, close, rename); returns "" or a one-line error, after
  // which nothing new is left at the path (a device or FIFO may have received part of the bytes).
  std::string commit(std::string_view bytes);

 private:
  std::string target_, tmp_, error_;
  int fd_ = -1;
  bool stdout_ = false, through_ = false;
};

}  // namespace mra::npy
