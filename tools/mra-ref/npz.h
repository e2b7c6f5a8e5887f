// tools/mra-ref/npz.h: NumPy .npz archives (np.savez and np.savez_compressed): ZIP archives whose members
// NAME.npy are .npy files. Reads stored and deflated members (zip.h), writes stored ones as np.savez does.
// Pure functions of their byte buffers, fuzzed (tests/fuzz, target npz); tested by tests/cli and tests/interop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "npy.h"

namespace mra::npz {

// The names of the arrays (members ending in .npy, without the suffix), in archive order; or an error.
npy::Listing list(std::string_view bytes);

// Array `name` of the archive; a missing name is an error that lists the names there are.
npy::Parsed read(std::string_view bytes, const std::string& name);

// An archive with the one float32 array `name` of `shape`, as np.savez(file, name=array) writes it. Throws
// std::length_error when the array does not fit a ZIP archive without zip64 (4 GiB).
std::string serialize_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);

}  // namespace mra::npz
