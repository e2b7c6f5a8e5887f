// tools/mra-ref/safetensors.h: safetensors files (Hugging Face): an 8-byte little-endian header length, a JSON
// header {"NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ..., "__metadata__": {...}}
// and the tensors' bytes, little-endian and C-ordered. Reads F64, F32, F16, BF16, BOOL and the integer dtypes
// U8 I8 U16 I16 U32 I32 U64 I64; writes F32 as the safetensors library does (header padded with spaces to a
// multiple of 8 bytes). Dependency-free, with its own JSON reader for the header's subset (objects, arrays,
// strings with every JSON escape, non-negative integers; nesting at most 3 deep). Pure functions of their byte
// buffers, fuzzed (tests/fuzz, target safetensors); tested by tests/cli and tests/interop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "npy.h"

namespace mra::safetensors {

// The names of the tensors, in header order; or an error.
npy::Listing list(std::string_view bytes);

// Tensor `name`, its values widened to double (npy::Array; descr is the safetensors dtype, e.g. "BF16");
// a missing name is an error that lists the names there are.
npy::Parsed read(std::string_view bytes, const std::string& name);

// A file with the one float32 tensor `name` of `shape`.
std::string serialize_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);

}  // namespace mra::safetensors
