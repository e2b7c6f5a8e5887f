// tests/fuzz/targets/fuzz_npz.cpp: libFuzzer target for the .npz reader: the ZIP index and member extraction
// (mra::zip), the DEFLATE decoder on its own, and mra::npz on top.
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_npz -dict=tests/fuzz/npz.dict WORK_DIR tests/fuzz/corpus/npz
// Beyond "no crash, no sanitizer report", every input checks the readers' contracts: a rejection is one line;
// an extracted member has exactly its declared size and CRC; inflate never outgrows its limit; an array read
// from the archive holds what its shape promises; the writer's archive of it reads back bit for bit.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "contract.h"
#include "inflate.h"
#include "npz.h"
#include "zip.h"

using fuzz::one_line;
using fuzz::require;

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
  // Deflate can expand an input about 1032-fold, so a member may hold more elements than the archive has bytes.
  fuzz::check_members(
      listing.names, [&](const std::string& name) { return mra::npz::read(bytes, name); },
      [](const std::string& name, const std::vector<int64_t>& shape, const float* values) {
        return mra::npz::read(mra::npz::serialize_f32(name, shape, values), name);
      },
      std::numeric_limits<uint64_t>::max());
  return 0;
}
