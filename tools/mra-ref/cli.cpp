// tools/mra-ref/cli.cpp: option and number parsing for mra-ref (see cli.h). Tested by tests/cli.
#include "cli.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "npy.h"

namespace mra::cli {

std::string printable(std::string_view text) { return npy::printable(text); }

Options::Options(const std::vector<std::string>& args, const std::vector<std::string>& value_flags) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
    } else if (a.size() > 1 && a[0] == '-') {
      if (std::find(value_flags.begin(), value_flags.end(), a) == value_flags.end())
        throw Failure(a, "unknown option");
      if (i + 1 == args.size()) throw Failure(a, "missing value");
      if (!values_.emplace(a, args[i + 1]).second) throw Failure(a, "given more than once");
      ++i;
    } else {
      positional_.push_back(a);
    }
  }
}

std::optional<std::string> Options::get(const std::string& flag) const {
  const auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Options::require(const std::string& flag) const {
  const auto v = get(flag);
  if (!v) throw Failure(flag, "required");
  return *v;
}

int64_t parse_int(const std::string& flag, const std::string& text, int64_t min_value) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) throw Failure(flag, "'" + text + "' is out of range");
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    throw Failure(flag, "'" + text + "' is not an integer");
  if (value < min_value) throw Failure(flag, "'" + text + "' must be at least " + std::to_string(min_value));
  return value;
}

double parse_real(const std::string& flag, const std::string& text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value))
    throw Failure(flag, "'" + text + "' is not a finite number");
  return value;
}

std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text, int64_t min_value) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    values.push_back(parse_int(flag, text.substr(start, comma - start), min_value));
    if (comma == std::string::npos) return values;
    start = comma + 1;
  }
}

}  // namespace mra::cli
