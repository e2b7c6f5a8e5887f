// tests/fuzz/targets/contract.h: the checks the fuzz targets share. A violated contract aborts with one line
// naming the target and the contract (libFuzzer keeps the input as an artifact); an error is one line; an array
// read from a container (.npz, safetensors) holds the elements its shape promises and survives the writer and
// the reader bit for bit.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "npy.h"

namespace fuzz {

inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "%s: contract violated: %s\n", program_invocation_short_name, what);
  std::abort();
}

inline bool one_line(const std::string& error) { return !error.empty() && error.find('\n') == std::string::npos; }

// Every member `names` of a container: read(name) is the reader under test on the fuzzed bytes, and
// write_read(name, shape, floats) the container the writer makes of one array, read back by the same reader.
// A rejected member says why in one line; an accepted one holds as many elements as its shape promises, at most
// `max_elements`, and its float32 copy comes back with the same shape and the same bits.
template <class Read, class WriteRead>
void check_members(const std::vector<std::string>& names, Read read, WriteRead write_read, uint64_t max_elements) {
  for (const std::string& name : names) {
    const mra::npy::Parsed p = read(name);
    if (!p.ok()) {
      require(one_line(p.error), "an error is not one line");
      continue;
    }
    uint64_t count = 1;
    for (int64_t d : p.array.shape) count *= static_cast<uint64_t>(d);
    require(count == p.array.values.size(), "the element count differs from the product of the shape");
    require(count <= max_elements, "more elements than the input can hold");
    std::vector<float> as_float(p.array.values.begin(), p.array.values.end());
    const mra::npy::Parsed back = write_read(name, p.array.shape, as_float.data());
    require(back.ok() && back.array.shape == p.array.shape, "the writer's container does not read back");
    std::vector<float> round_trip(back.array.values.begin(), back.array.values.end());
    require(as_float.empty() || std::memcmp(round_trip.data(), as_float.data(), as_float.size() * sizeof(float)) == 0,
            "float32 values changed through the writer and the reader");
  }
}

}  // namespace fuzz
