// tools/mra-ref/files.cpp: reading and writing arrays by file name (see files.h). Tested by tests/cli and
// tests/interop.
#include "files.h"

#include <cerrno>
#include <cstring>
#include <new>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npz.h"
#include "safetensors.h"

namespace mra::files {
namespace {

constexpr std::string_view kNpz = ".npz", kSafetensors = ".safetensors";

enum class Read { ok, not_regular, failed };

// A regular file's bytes, exactly as many as its size says when opened: the read is bounded by the file, never
// by what it claims inside. Anything else (a pipe, a device) is not read.
Read read_regular(const std::string& path, std::string& bytes, std::string& error) {
  // A FIFO or device is left unopened: opening and closing a FIFO here would end its writer's stream before
  // the .npy reader, which takes such inputs, opens it.
  struct stat pre {};
  if (::stat(path.c_str(), &pre) == 0 && !S_ISREG(pre.st_mode) && !S_ISDIR(pre.st_mode)) return Read::not_regular;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = std::string("cannot open: ") + std::strerror(errno);
    return Read::failed;
  }
  struct stat st {};
  Read result = Read::ok;
  if (::fstat(fd, &st) != 0) {
    error = std::string("cannot stat: ") + std::strerror(errno);
    result = Read::failed;
  } else if (S_ISDIR(st.st_mode)) {
    error = "is a folder, not a file";
    result = Read::failed;
  } else if (!S_ISREG(st.st_mode)) {
    result = Read::not_regular;
  } else {
    bytes.resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? std::string("read error: ") + std::strerror(errno) : "the file shrank while being read";
        result = Read::failed;
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  return result;
}

bool is_zip(std::string_view bytes) { return bytes.starts_with("PK\x03\x04") || bytes.starts_with("PK\x05\x06"); }

// safetensors has no magic string: an 8-byte length, then the JSON header's '{'.
bool is_safetensors(std::string_view bytes) { return bytes.size() > 8 && bytes[8] == '{'; }

// Whether `path` is a regular file whose first bytes are those of a ZIP archive or a safetensors file.
bool container_head(const std::string& path) {
  struct stat pre {};
  if (::stat(path.c_str(), &pre) != 0 || !S_ISREG(pre.st_mode)) return false;  // never open a FIFO (see above)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  char head[9];
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const ssize_t n = regular ? ::read(fd, head, sizeof head) : -1;
  ::close(fd);
  const std::string_view bytes(head, n > 0 ? static_cast<size_t>(n) : 0);
  return is_zip(bytes) || is_safetensors(bytes);
}

template <typename Format>
npy::Parsed from_container(std::string_view bytes, std::string name) {
  if (name.empty()) {
    const auto listing = Format::list(bytes);
    if (!listing.ok()) return {{}, listing.error};
    if (listing.names.size() != 1) {
      return {{}, "holds " + std::to_string(listing.names.size()) + " arrays (" + npy::quoted_list(listing.names) +
                      "): name one as FILE:NAME"};
    }
    name = listing.names.front();
  }
  return Format::read(bytes, name);
}

// The two container formats, as one interface for from_container.
struct Npz {
  static npy::Listing list(std::string_view b) { return npz::list(b); }
  static npy::Parsed read(std::string_view b, const std::string& n) { return npz::read(b, n); }
};
struct Safetensors {
  static npy::Listing list(std::string_view b) { return safetensors::list(b); }
  static npy::Parsed read(std::string_view b, const std::string& n) { return safetensors::read(b, n); }
};

}  // namespace

Spec parse_spec(const std::string& text, const std::string& default_name) {
  Spec s;
  s.text = text;
  s.path = text;
  s.name = default_name;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos) {
    const std::string before = text.substr(0, colon);
    if (before.ends_with(kNpz) || before.ends_with(kSafetensors)) {
      s.path = before;
      s.name = text.substr(colon + 1);
    }
  }
  s.safetensors = s.path.ends_with(kSafetensors);
  s.container = s.safetensors || s.path.ends_with(kNpz);
  return s;
}

npy::Parsed load(const Spec& spec) {
  // A container is read whole; anything else goes to the .npy reader, which reads no more than its header
  // declares (and streams a pipe or a device).
  std::string bytes, error;
  try {
    if (container_head(spec.path) && read_regular(spec.path, bytes, error) == Read::ok) {
      if (is_zip(bytes)) return from_container<Npz>(bytes, spec.name);
      if (is_safetensors(bytes)) return from_container<Safetensors>(bytes, spec.name);
    }
  } catch (const std::bad_alloc&) {
    return {{}, "out of memory reading the file (" + std::to_string(bytes.size()) + " bytes) and its array"};
  }
  if (!error.empty()) return {{}, error};
  npy::Parsed parsed = npy::load(spec.path);
  if (!parsed.ok() && spec.container)
    parsed.error = "neither a ZIP archive (.npz) nor a safetensors file, nor .npy: " + parsed.error;
  return parsed;
}

npy::Listing list(const std::string& path) {
  std::string bytes, error;
  if (read_regular(path, bytes, error) != Read::ok) return {{}, error.empty() ? "not a regular file" : error};
  if (is_zip(bytes)) return npz::list(bytes);
  if (is_safetensors(bytes)) return safetensors::list(bytes);
  return {};
}

std::string serialize_f32(const Spec& spec, const std::vector<int64_t>& shape, const float* data) {
  if (spec.safetensors) return safetensors::serialize_f32(spec.name, shape, data);
  if (spec.container) return npz::serialize_f32(spec.name, shape, data);
  return npy::serialize_f32(shape, data);
}

}  // namespace mra::files
