// tests/common/doctest.h: doctest as every test file of the suite includes it. doctest 2.4.9 (Debian 12's
// doctest-dev, the version tests/CMakeLists.txt finds) writes a C string given to INFO, CAPTURE or a failed
// assertion as its address ("configuration 0x55b3be44164d"): its pointer printer takes `const char*` too. The
// specialisations below print the characters instead, so that a failure names its configuration, stage or case
// (test `test messages: a C string in INFO prints as its characters`).
#pragma once

#include <doctest/doctest.h>

#include <ostream>

#if DOCTEST_VERSION_MAJOR == 2 && DOCTEST_VERSION_MINOR == 4 && DOCTEST_VERSION_PATCH == 9
namespace doctest::detail {

template <>
struct filldata<const char*> {
  static void fill(std::ostream* stream, const char* in) { *stream << (in != nullptr ? in : "(null)"); }
};

template <>
struct filldata<char*> {
  static void fill(std::ostream* stream, const char* in) { filldata<const char*>::fill(stream, in); }
};

}  // namespace doctest::detail
#endif
