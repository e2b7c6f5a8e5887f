// tests/fuzz/targets/fuzz_npz.cpp: libFuzzer target for the .npz reader: the ZIP index and member extraction
// (mra::zip), the DEFLATE decoder on its own, and mra::npz on top.
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_npz -dict=tests/fuzz/npz.dict WORK_DIR tests/fuzz/corpus/npz
// Beyond "no crash, no sanitizer report", every input checks the readers' contracts: a rejection is one line;
// an extracted member has exactly its declared size and CRC; inflate never outgrows its limit; an array read
// from the archive holds what its shape promises; the writer's archive of it reads back bit for bit.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "inflate.h"
#include "npz.h"
#include "zip.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_npz: contract violated: %s\n", what);
  std::abort();
}

bool one_line(const std::string& error) { return !error.empty() && error.find('\n') == std::string::npos; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // The decoder alone, with a limit the input can exceed (deflate expands up to 1032:1).
  constexpr uint64_t kLimit = 1 << 16;
  std::string inflated, why;
  if (mra::zip::inflate(bytes, kLimit, inflated, why))
    require(inflated.size() <= kLimit, "inflate produced more than its limit");
  else
    require(one_line(why), "an inflate error is not one line");

  const mra::zip::Index index = mra::zip::index(bytes);
  if (!index.ok()) {
    require(one_line(index.error), "a ZIP error is not one line");
    return 0;
  }
  for (const mra::zip::Entry& e : index.entries) {
    const mra::zip::Extracted member = mra::zip::extract(bytes, e);
    if (!member.ok()) {
      require(one_line(member.error), "an extraction error is not one line");
      continue;
    }
    require(member.data.size() == e.size, "a member's size differs from the directory's");
    require(mra::zip::crc32(member.data) == e.crc, "a member's CRC differs from the directory's");
  }

  const mra::npy::Listing listing = mra::npz::list(bytes);
  require(listing.ok(), "list fails where index succeeded");
  for (const std::string& name : listing.names) {
    const mra::npy::Parsed p = mra::npz::read(bytes, name);
    if (!p.ok()) {
      require(one_line(p.error), "an .npz error is not one line");
      continue;
    }
    uint64_t count = 1;
    for (int64_t d : p.array.shape) count *= static_cast<uint64_t>(d);
    require(count == p.array.values.size(), "the element count differs from the product of the shape");
    std::vector<float> as_float(p.array.values.begin(), p.array.values.end());
    const std::string again = mra::npz::serialize_f32(name, p.array.shape, as_float.data());
    const mra::npy::Parsed back = mra::npz::read(again, name);
    require(back.ok() && back.array.shape == p.array.shape, "the writer's archive does not read back");
    std::vector<float> round_trip(back.array.values.begin(), back.array.values.end());
    require(as_float.empty() || std::memcmp(round_trip.data(), as_float.data(), as_float.size() * sizeof(float)) == 0,
            "float32 values changed through the writer and the reader");
  }
  return 0;
}
