// tests/reference/test_messages.cpp: the suite's failure messages name what failed. Configurations, stages and
// cases are C strings in INFO and CAPTURE all over the suite, and doctest 2.4.9 printed them as addresses until
// tests/common/doctest.h taught it their characters.
#include "common/doctest.h"

#include <string>

namespace {

// What INFO, CAPTURE and a failed assertion write for `value`: doctest's own stringification of it.
template <class T>
std::string shown(const T& value) {
  const doctest::String s = doctest::toString(value);  // as MessageBuilder does for INFO and CAPTURE
  return std::string(s.c_str());
}

}  // namespace

TEST_CASE("test messages: a C string in INFO prints as its characters") {
  const char* name = "mra_fwd_r32x1_d64_bf16";
  char editable[] = "select L1";
  char* stage = editable;
  CHECK(shown(name) == "mra_fwd_r32x1_d64_bf16");
  CHECK(shown(stage) == "select L1");
  CHECK(shown(static_cast<const char*>(nullptr)) == "(null)");
  CHECK(shown(std::string("group")) == "group");  // unchanged for what doctest printed right already
  CHECK(shown(42) == "42");
}
