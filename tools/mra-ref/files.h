// tools/mra-ref/files.h: the array files mra-ref reads and writes, and how a command line names an array in one.
//
//   FILE.npy                     the array of a .npy file
//   FILE.npz[:NAME]              array NAME of a NumPy archive (np.savez, np.savez_compressed)
//   FILE.safetensors[:NAME]      tensor NAME of a safetensors file
// Without :NAME, an option reads the array named after it (--q reads q, --mask reads mask, -o writes out).
// The :NAME suffix is split off only after a path ending in .npz or .safetensors, so other paths may hold ':'.
// Reading goes by the file's content (ZIP, safetensors or .npy), so a misnamed file still reads; writing goes by
// the extension (anything else writes .npy). Tested by tests/cli and tests/interop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "npy.h"

namespace mra::files {

struct Spec {
  std::string text;  // as the user wrote it, for messages
  std::string path;
  std::string name;  // the array within a container; empty: the container's only array
  bool container = false;  // the path ends in .npz or .safetensors
  bool safetensors = false;
};

// `text` as above; `default_name` is used when no :NAME is given (empty: the only array of the file).
Spec parse_spec(const std::string& text, const std::string& default_name);

// The array `spec` names. Errors are one line without the file name (the caller names spec.text).
npy::Parsed load(const Spec& spec);

// The names of the arrays in the container at `path` (a .npy file has none); or an error.
npy::Listing list(const std::string& path);

// The bytes of a file that holds one float32 array of `shape` in the format `spec`'s extension names, the array
// called spec.name in a container. Throws std::length_error when the format cannot hold it.
std::string serialize_f32(const Spec& spec, const std::vector<int64_t>& shape, const float* data);

}  // namespace mra::files
