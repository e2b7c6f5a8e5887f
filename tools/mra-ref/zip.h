// tools/mra-ref/zip.h: the ZIP container under .npz files: a reader of stored and deflated members (zip64
// included) and a writer of stored members, dependency-free (no zlib).
//
// `index` and `extract` are pure functions of their byte buffer and are fuzzed (tests/fuzz, target npz): every
// offset and size read from the file is checked against the buffer before use, the inflated size of a member is
// bounded by the size its central directory entry declares, and every member's CRC-32 is checked. Tested by
// tests/cli (zip_test.cpp) and, against numpy's own files, by tests/interop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mra::zip {

// One member as the central directory describes it.
struct Entry {
  std::string name;
  uint16_t method = 0;       // 0 stored, 8 deflated; others are refused by extract
  uint16_t flags = 0;
  uint32_t crc = 0;
  uint64_t compressed_size = 0, size = 0;
  uint64_t local_offset = 0;  // of the member's local header
};

struct Index {
  std::vector<Entry> entries;  // in central directory order, names unique
  std::string error;           // empty on success; else one line saying what is wrong
  bool ok() const { return error.empty(); }
};

// Reads the end of central directory record (zip64 when needed) and the central directory of `bytes`.
Index index(std::string_view bytes);

struct Extracted {
  std::string data;
  std::string error;
  bool ok() const { return error.empty(); }
};

// The uncompressed bytes of `entry`, one of index(bytes)'s entries, after checking its local header and CRC.
Extracted extract(std::string_view bytes, const Entry& entry);

// A ZIP archive of stored (uncompressed) members, in order, as Python's zipfile reads it; names must be unique
// and under 64 KiB, each member and the whole archive under 4 GiB (no zip64 is written). Deterministic: every
// timestamp is 1980-01-01 00:00.
std::string serialize_stored(const std::vector<std::pair<std::string, std::string_view>>& members);

// CRC-32 (ISO-HDLC, as ZIP and PNG use it).
uint32_t crc32(std::string_view bytes);

}  // namespace mra::zip
