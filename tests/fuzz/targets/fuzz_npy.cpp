// tests/fuzz/targets/fuzz_npy.cpp: libFuzzer target for the .npy reader (mra::npy::parse).
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_npy -dict=tests/fuzz/npy.dict WORK_DIR tests/fuzz/corpus/npy
// Beyond "no crash, no sanitizer report", every input checks the reader's contract: a rejection is one line,
// an accepted array holds exactly the elements its shape promises and no more bytes than the file had, and
// a float32 copy of it survives the writer and the reader bit for bit.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "contract.h"
#include "npy.h"

namespace {

using fuzz::require;

int element_size(const std::string& descr) { return std::atoi(descr.c_str() + 2); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const mra::npy::Parsed parsed = mra::npy::parse(bytes);
  if (!parsed.ok()) {
    require(parsed.error.find('\n') == std::string::npos, "an error message spans several lines");
    return 0;
  }
  const mra::npy::Array& a = parsed.array;
  uint64_t count = 1;
  for (int64_t d : a.shape) {
    require(d >= 0, "a negative dimension was accepted");
    count *= static_cast<uint64_t>(d);
  }
  require(count == a.values.size(), "the element count differs from the product of the shape");
  require(a.descr.size() == 3, "an accepted dtype is not of the form <f4");
  require(count * static_cast<uint64_t>(element_size(a.descr)) < size, "more data than the file holds");

  std::vector<float> as_float(a.values.begin(), a.values.end());
  const mra::npy::Parsed again = mra::npy::parse(mra::npy::serialize_f32(a.shape, as_float.data()));
  require(again.ok(), "the writer's output does not parse");
  require(again.array.descr == "<f4" && again.array.shape == a.shape, "the writer changed the dtype or shape");
  std::vector<float> round_trip(again.array.values.begin(), again.array.values.end());
  require(round_trip.size() == as_float.size() &&
              (as_float.empty() ||
               std::memcmp(round_trip.data(), as_float.data(), as_float.size() * sizeof(float)) == 0),
          "float32 values changed through the writer and the reader");
  return 0;
}
