// tests/fuzz/targets/fuzz_safetensors.cpp: libFuzzer target for the safetensors reader (mra::safetensors).
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_safetensors -dict=tests/fuzz/safetensors.dict WORK_DIR tests/fuzz/corpus/safetensors
// Beyond "no crash, no sanitizer report", every input checks the reader's contract: a rejection is one line; a
// tensor read holds exactly the elements its shape promises, from no more bytes than the file has; the writer's
// file of it reads back bit for bit.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "contract.h"
#include "safetensors.h"

using fuzz::one_line;
using fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const mra::npy::Listing listing = mra::safetensors::list(bytes);
  if (!listing.ok()) {
    require(one_line(listing.error), "an error is not one line");
    require(!mra::safetensors::read(bytes, "x").ok(), "read succeeds where list failed");
    return 0;
  }
  // A tensor's elements are at least one byte each.
  fuzz::check_members(
      listing.names, [&](const std::string& name) { return mra::safetensors::read(bytes, name); },
      [](const std::string& name, const std::vector<int64_t>& shape, const float* values) {
        return mra::safetensors::read(mra::safetensors::serialize_f32(name, shape, values), name);
      },
      size);
  return 0;
}
