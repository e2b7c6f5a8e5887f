// tools/mra-ref/cli.h: the command-line plumbing of mra-ref: the error every failure becomes, option
// parsing and the parsing of numbers and lists. Tested through the binary by tests/cli (ctest -L cli).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mra::cli {

// `text` with every control character written as \xNN: messages quote arguments and file names, which may
// hold newlines, and must still be one line.
std::string printable(std::string_view text);

// Every user-facing failure: printed as "mra-ref: <subject>: <problem>" on one line, exit status 2. The subject
// is the file or the option at fault.
class Failure : public std::runtime_error {
 public:
  Failure(const std::string& subject, const std::string& problem)
      : std::runtime_error(printable(problem)), subject_(printable(subject)) {}
  const std::string& subject() const { return subject_; }

 private:
  std::string subject_;
};

// The arguments of one subcommand: `--name value` or `--name=value` options (each at most once), switches
// (`--quiet`), positional arguments and --help; `--` ends the options (what follows is positional). Any other
// argument starting with '-' is an error, and so is an option whose value is missing, empty or looks like
// another option (`-o --q`), so that the error names the option that lost its value.
class Options {
 public:
  Options(const std::vector<std::string>& args, const std::vector<std::string>& value_flags,
          const std::vector<std::string>& switches = {});

  bool help() const { return help_; }
  bool has(const std::string& flag) const { return values_.count(flag) != 0; }
  std::optional<std::string> get(const std::string& flag) const;
  std::string require(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Numbers as options give them; `flag` names the option in the error.
int64_t parse_int(const std::string& flag, const std::string& text, int64_t min_value);
double parse_real(const std::string& flag, const std::string& text);  // finite
std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text, int64_t min_value);

}  // namespace mra::cli
