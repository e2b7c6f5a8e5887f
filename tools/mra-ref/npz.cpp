// tools/mra-ref/npz.cpp: the .npz reader and writer declared in npz.h. Tested by tests/cli, fuzzed (npz).
#include "npz.h"

#include <limits>
#include <stdexcept>

#include "zip.h"

namespace mra::npz {
namespace {

constexpr std::string_view kSuffix = ".npy";

bool is_array(const zip::Entry& e) { return e.name.size() > kSuffix.size() && e.name.ends_with(kSuffix); }

std::string array_name(const zip::Entry& e) { return e.name.substr(0, e.name.size() - kSuffix.size()); }

}  // namespace

npy::Listing list(std::string_view bytes) {
  npy::Listing listing;
  const zip::Index index = zip::index(bytes);
  if (!index.ok()) {
    listing.error = index.error;
    return listing;
  }
  for (const zip::Entry& e : index.entries)
    if (is_array(e)) listing.names.push_back(array_name(e));
  return listing;
}

npy::Parsed read(std::string_view bytes, const std::string& name) {
  npy::Parsed result;
  const zip::Index index = zip::index(bytes);
  if (!index.ok()) {
    result.error = index.error;
    return result;
  }
  std::vector<std::string> names;
  for (const zip::Entry& e : index.entries) {
    if (!is_array(e)) continue;
    if (array_name(e) != name) {
      names.push_back(array_name(e));
      continue;
    }
    const zip::Extracted member = zip::extract(bytes, e);
    if (!member.ok()) {
      result.error = member.error;
      return result;
    }
    result = npy::parse(member.data);
    if (!result.ok()) result.error = "member " + npy::quoted(e.name) + ": " + result.error;
    return result;
  }
  result.error = "no array " + npy::quoted(name) + " in the archive (it holds " +
                 (names.empty() ? "no arrays" : npy::quoted_list(names)) + ")";
  return result;
}

std::string serialize_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  if (name.size() > 0xffff - kSuffix.size()) throw std::length_error("the array name is longer than ZIP allows");
  const std::string member = npy::serialize_f32(shape, data);
  // Sizes and offsets are 32-bit fields without zip64; leave room for the headers and the name.
  if (member.size() > std::numeric_limits<uint32_t>::max() - 2 * name.size() - 1024)
    throw std::length_error("the array does not fit an .npz without zip64 (4 GiB); write .npy instead");
  return zip::serialize_stored({{name + std::string(kSuffix), member}});
}

}  // namespace mra::npz
