// tools/mra-ref/cli.cpp: option and number parsing for mra-ref (see cli.h). Tested by tests/cli.
#include "cli.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cmath>

#include "npy.h"

namespace mra::cli {

std::string printable(std::string_view text) { return npy::printable(text); }

namespace {

// A value that is itself an option ("--q", "-o") rather than a number ("-1", "-0.5") or "-" (stdout).
bool looks_like_option(const std::string& value) {
  return value.size() > 1 && value[0] == '-' && !(value[1] >= '0' && value[1] <= '9') && value[1] != '.';
}

}  // namespace

Options::Options(const std::vector<std::string>& args, const std::vector<std::string>& value_flags,
                 const std::vector<std::string>& switches) {
  const auto known = [](const std::vector<std::string>& flags, const std::string& flag) {
    return std::find(flags.begin(), flags.end(), flag) != flags.end();
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      // The end of the options: what follows is positional even when it starts with '-' (compare -a.npy b.npy).
      positional_.insert(positional_.end(), args.begin() + std::ptrdiff_t(i) + 1, args.end());
      break;
    }
    if (a == "--help" || a == "-h") {
      help_ = true;
    } else if (a.size() > 1 && a[0] == '-') {
      const size_t equals = a.find('=');
      const std::string flag = a.substr(0, equals);
      std::string value;
      if (known(switches, flag)) {
        if (equals != std::string::npos) throw Failure(flag, "takes no value");
        value = "1";
      } else if (!known(value_flags, flag)) {
        throw Failure(flag, "unknown option");
      } else if (equals != std::string::npos) {
        value = a.substr(equals + 1);
      } else {
        if (i + 1 == args.size()) throw Failure(a, "missing value");
        value = args[++i];
        if (looks_like_option(value))
          throw Failure(a, "missing value (the next argument, '" + value + "', is an option)");
      }
      // An empty value names no file and no number; `--q=` or `-o ''` is a slip, reported as such.
      if (value.empty()) throw Failure(flag, "empty value");
      if (!values_.emplace(flag, value).second) throw Failure(flag, "given more than once");
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
