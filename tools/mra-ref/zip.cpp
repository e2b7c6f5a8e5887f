// tools/mra-ref/zip.cpp: the ZIP reader and writer declared in zip.h (APPNOTE.TXT 6.3: end of central directory,
// zip64 end record and extra field, central directory and local headers). Tested by tests/cli (zip_test.cpp);
// fuzzed (npz).
#include "zip.h"

#include <array>
#include <limits>
#include <set>
#include <stdexcept>

#include "inflate.h"
#include "npy.h"

namespace mra::zip {
namespace {

struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) { throw Corrupt(what); }

constexpr uint32_t kLocalSignature = 0x04034b50, kCentralSignature = 0x02014b50, kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50, kZip64LocatorSignature = 0x07064b50;
constexpr size_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56, kCentralSize = 46, kLocalSize = 30;

// Little-endian fields of `bytes`, every read checked against its end: the file's own numbers decide where to
// read, so none may be trusted.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  uint64_t le(uint64_t at, int size, const char* what) const {
    if (at > bytes_.size() || static_cast<uint64_t>(size) > bytes_.size() - at)
      fail(std::string("truncated: ") + what + " lies past the end of the file");
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes_[at + static_cast<uint64_t>(i)]);
    return v;
  }
  uint16_t u16(uint64_t at, const char* what) const { return static_cast<uint16_t>(le(at, 2, what)); }
  uint32_t u32(uint64_t at, const char* what) const { return static_cast<uint32_t>(le(at, 4, what)); }
  uint64_t u64(uint64_t at, const char* what) const { return le(at, 8, what); }

  std::string_view span(uint64_t at, uint64_t size, const char* what) const {
    if (at > bytes_.size() || size > bytes_.size() - at)
      fail(std::string("truncated: ") + what + " lies past the end of the file");
    return bytes_.substr(static_cast<size_t>(at), static_cast<size_t>(size));
  }

  uint64_t size() const { return bytes_.size(); }

 private:
  std::string_view bytes_;
};

struct Directory {
  uint64_t entries = 0, size = 0, offset = 0;
};

// The end of central directory record is the last 22 bytes of an archive without a comment; with one, it is
// the record whose comment length reaches exactly the end of the file.
Directory find_directory(const Reader& r) {
  if (r.size() < kEndSize) fail("not a ZIP archive (.npz): too short for an end of central directory record");
  const uint64_t lowest = r.size() - kEndSize > 0xffff ? r.size() - kEndSize - 0xffff : 0;
  for (uint64_t at = r.size() - kEndSize;; --at) {
    if (r.u32(at, "the end record") == kEndSignature && at + kEndSize + r.u16(at + 20, "the comment length") == r.size()) {
      if (r.u16(at + 4, "the disk number") != 0 || r.u16(at + 6, "the directory's disk") != 0)
        fail("multi-disk ZIP archives are not supported");
      Directory d{r.u16(at + 10, "the entry count"), r.u32(at + 12, "the directory size"),
                  r.u32(at + 16, "the directory offset")};
      if (d.entries != 0xffff && d.size != 0xffffffff && d.offset != 0xffffffff) return d;
      // A saturated field defers to the zip64 end record, found through the locator just before this record.
      if (at < kZip64LocatorSize || r.u32(at - kZip64LocatorSize, "the zip64 locator") != kZip64LocatorSignature)
        fail("a saturated end record without a zip64 locator");
      const uint64_t end64 = r.u64(at - kZip64LocatorSize + 8, "the zip64 end record offset");
      if (r.u32(end64, "the zip64 end record") != kZip64EndSignature || end64 + kZip64EndSize > r.size())
        fail("the zip64 locator does not point at a zip64 end record");
      if (r.u32(end64 + 16, "the zip64 disk number") != 0 || r.u32(end64 + 20, "the zip64 directory's disk") != 0)
        fail("multi-disk ZIP archives are not supported");
      return {r.u64(end64 + 32, "the zip64 entry count"), r.u64(end64 + 40, "the zip64 directory size"),
              r.u64(end64 + 48, "the zip64 directory offset")};
    }
    if (at == lowest) break;
  }
  fail("not a ZIP archive (.npz): no end of central directory record");
}

// Sizes and offset that the 32-bit fields saturate come from the zip64 extra field (id 1), in this order.
void apply_zip64(const Reader& r, uint64_t extra, uint64_t extra_size, Entry& e, bool usize, bool csize, bool offset) {
  const uint64_t end = extra + extra_size;
  for (uint64_t at = extra; at + 4 <= end;) {
    const uint16_t id = r.u16(at, "an extra field"), size = r.u16(at + 2, "an extra field");
    if (at + 4 + size > end) fail("member " + npy::quoted(e.name) + ": an extra field overruns its entry");
    if (id == 1) {
      uint64_t field = at + 4;
      const auto next = [&](uint64_t& value) {
        if (field + 8 > at + 4 + size) fail("member " + npy::quoted(e.name) + ": the zip64 extra field is too short");
        value = r.u64(field, "the zip64 extra field");
        field += 8;
      };
      if (usize) next(e.size);
      if (csize) next(e.compressed_size);
      if (offset) next(e.local_offset);
      return;
    }
    at += 4 + size;
  }
  fail("member " + npy::quoted(e.name) + ": saturated sizes without a zip64 extra field");
}

Index index_or_throw(std::string_view bytes) {
  const Reader r(bytes);
  const Directory d = find_directory(r);
  if (d.offset > r.size() || d.size > r.size() - d.offset) fail("the central directory lies past the end of the file");
  // Each entry takes at least 46 bytes: a count beyond that is a lie, caught before any allocation.
  if (d.entries > d.size / kCentralSize) fail("the central directory is too small for its entry count");

  Index index;
  std::set<std::string> names;
  uint64_t at = d.offset;
  const uint64_t end = d.offset + d.size;
  for (uint64_t i = 0; i < d.entries; ++i) {
    if (end - at < kCentralSize || r.u32(at, "a central directory entry") != kCentralSignature)
      fail("central directory entry " + std::to_string(i) + " is malformed");
    Entry e;
    e.flags = r.u16(at + 8, "the entry flags");
    e.method = r.u16(at + 10, "the entry method");
    e.crc = r.u32(at + 16, "the entry CRC");
    e.compressed_size = r.u32(at + 20, "the compressed size");
    e.size = r.u32(at + 24, "the size");
    const uint16_t name_size = r.u16(at + 28, "the name length"), extra_size = r.u16(at + 30, "the extra length");
    const uint16_t comment_size = r.u16(at + 32, "the comment length");
    e.local_offset = r.u32(at + 42, "the local header offset");
    const uint64_t record = kCentralSize + name_size + extra_size + comment_size;
    if (record > end - at) fail("central directory entry " + std::to_string(i) + " overruns the directory");
    e.name = std::string(r.span(at + kCentralSize, name_size, "a member name"));
    const bool usize = e.size == 0xffffffff, csize = e.compressed_size == 0xffffffff;
    const bool offset = e.local_offset == 0xffffffff;
    if (usize || csize || offset) apply_zip64(r, at + kCentralSize + name_size, extra_size, e, usize, csize, offset);
    if (!names.insert(e.name).second) fail("member " + npy::quoted(e.name) + " appears twice");
    index.entries.push_back(std::move(e));
    at += record;
  }
  return index;
}

Extracted extract_or_throw(std::string_view bytes, const Entry& e) {
  const Reader r(bytes);
  const std::string member = "member " + npy::quoted(e.name) + ": ";
  if (e.flags & 1) fail(member + "encrypted members are not supported");
  if (e.method != 0 && e.method != 8)
    fail(member + "compression method " + std::to_string(e.method) + " is not supported (stored or deflate only)");
  if (r.u32(e.local_offset, "a local header") != kLocalSignature)
    fail(member + "no local header where the central directory points");
  const uint16_t name_size = r.u16(e.local_offset + 26, "the local name length");
  const uint16_t extra_size = r.u16(e.local_offset + 28, "the local extra length");
  if (r.span(e.local_offset + kLocalSize, name_size, "the local name") != e.name)
    fail(member + "the local header names a different member");
  const std::string_view data =
      r.span(e.local_offset + kLocalSize + name_size + extra_size, e.compressed_size, "the member's data");

  Extracted out;
  if (e.method == 0) {
    if (e.compressed_size != e.size) fail(member + "a stored member whose two sizes differ");
    out.data = std::string(data);
  } else {
    std::string why;
    if (!inflate(data, e.size, out.data, why)) fail(member + why);
    if (out.data.size() != e.size)
      fail(member + "inflates to " + std::to_string(out.data.size()) + " bytes, the directory says " +
           std::to_string(e.size));
  }
  if (crc32(out.data) != e.crc) fail(member + "CRC-32 mismatch (the archive is corrupt)");
  return out;
}

void put(std::string& out, uint64_t value, int size) {
  for (int i = 0; i < size; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

}  // namespace

Index index(std::string_view bytes) {
  try {
    return index_or_throw(bytes);
  } catch (const Corrupt& e) {
    Index failed;
    failed.error = e.what();
    return failed;
  }
}

Extracted extract(std::string_view bytes, const Entry& entry) {
  try {
    return extract_or_throw(bytes, entry);
  } catch (const Corrupt& e) {
    Extracted failed;
    failed.error = e.what();
    return failed;
  }
}

uint32_t crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (const char ch : bytes) c = table[(c ^ static_cast<unsigned char>(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::string serialize_stored(const std::vector<std::pair<std::string, std::string_view>>& members) {
  constexpr uint16_t kVersion = 20;            // 2.0: the version that introduced stored and deflated members
  constexpr uint16_t kTime = 0, kDate = 0x21;  // 1980-01-01 00:00, the earliest DOS date
  std::string out, directory;
  for (const auto& member : members) {
    // Named copies, not structured bindings: the lambda below captures them (C++20 allows it, clang 14 not).
    const std::string& name = member.first;
    const std::string_view data = member.second;
    const uint32_t crc = crc32(data);
    const uint64_t offset = out.size();
    const auto common = [&](std::string& to) {
      put(to, kVersion, 2);
      put(to, 0, 2);  // flags
      put(to, 0, 2);  // method: stored
      put(to, kTime, 2);
      put(to, kDate, 2);
      put(to, crc, 4);
      put(to, data.size(), 4);
      put(to, data.size(), 4);
      put(to, name.size(), 2);
      put(to, 0, 2);  // extra length
    };
    put(out, kLocalSignature, 4);
    common(out);
    out += name;
    out += data;
    put(directory, kCentralSignature, 4);
    put(directory, kVersion, 2);  // made by
    common(directory);
    put(directory, 0, 2);  // comment length
    put(directory, 0, 2);  // disk
    put(directory, 0, 2);  // internal attributes
    put(directory, 0, 4);  // external attributes
    put(directory, offset, 4);
    directory += name;
  }
  const uint64_t directory_offset = out.size();
  out += directory;
  put(out, kEndSignature, 4);
  put(out, 0, 2);
  put(out, 0, 2);
  put(out, members.size(), 2);
  put(out, members.size(), 2);
  put(out, directory.size(), 4);
  put(out, directory_offset, 4);
  put(out, 0, 2);  // comment length
  return out;
}

}  // namespace mra::zip
