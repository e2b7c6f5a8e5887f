// tests/fuzz/targets/fuzz_safetensors.cpp: libFuzzer target for the safetensors reader (mra::safetensors).
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_safetensors -dict=tests/fuzz/safetensors.dict WORK_DIR tests/fuzz/corpus/safetensors
// Beyond "no crash, no sanitizer report", every input checks the reader's contract: a rejection is one line; a
// tensor read holds exactly the elements its shape promises, from no more bytes than the file has; the writer's
// file of it reads back bit for bit.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_safetensors: contract violated: %s\n", what);
  std::abort();
}

bool one_line(const std::string& error) { return !error.empty() && error.find('\n') == std::string::npos; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const mra::npy::Listing listing = mra::safetensors::list(bytes);
  if (!listing.ok()) {
    require(one_line(listing.error), "an error is not one line");
    require(!mra::safetensors::read(bytes, "x").ok(), "read succeeds where list failed");
    return 0;
  }
  for (const std::string& name : listing.names) {
    const mra::npy::Parsed p = mra::safetensors::read(bytes, name);
    if (!p.ok()) {
      require(one_line(p.error), "an error is not one line");
      continue;
    }
    uint64_t count = 1;
    for (int64_t d : p.array.shape) count *= static_cast<uint64_t>(d);
    require(count == p.array.values.size(), "the element count differs from the product of the shape");
    require(count <= size, "more elements than the file has bytes");
    std::vector<float> as_float(p.array.values.begin(), p.array.values.end());
    const std::string again = mra::safetensors::serialize_f32(name, p.array.shape, as_float.data());
    const mra::npy::Parsed back = mra::safetensors::read(again, name);
    require(back.ok() && back.array.shape == p.array.shape, "the writer's file does not read back");
    std::vector<float> round_trip(back.array.values.begin(), back.array.values.end());
    require(as_float.empty() || std::memcmp(round_trip.data(), as_float.data(), as_float.size() * sizeof(float)) == 0,
            "float32 values changed through the writer and the reader");
  }
  return 0;
}
