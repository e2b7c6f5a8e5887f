// tests/cli/npy_test.cpp: unit tests of the .npy reader and writer (mra::npy) on hand-built byte buffers.
//   ctest --test-dir build -L cli      or      build/tests/cli/npy_test
#include "common/doctest.h"

#include <filesystem>
#include <limits>

#include <unistd.h>

#include "npy.h"
#include "npy_bytes.h"

using npy_bytes::file;
using npy_bytes::header;
using npy_bytes::raw;

namespace {

mra::npy::Array parse_ok(const std::string& bytes) {
  const mra::npy::Parsed p = mra::npy::parse(bytes);
  INFO("error: " << p.error);
  REQUIRE(p.ok());
  return p.array;
}

// Parsing must fail with a one-line message containing `expected`.
void check_rejected(const std::string& bytes, const std::string& expected) {
  const mra::npy::Parsed p = mra::npy::parse(bytes);
  INFO("expected an error containing '" << expected << "', got '" << p.error << "'");
  CHECK_FALSE(p.ok());
  CHECK(p.error.find(expected) != std::string::npos);
  CHECK(p.error.find('\n') == std::string::npos);
}

const std::string kF4Data = raw<float>({1.5, -2.0, 0.25, 3.0, 4.0, -0.5});

}  // namespace

TEST_CASE("every format version parses, with the header length field of its width") {
  for (int major : {1, 2, 3}) {
    CAPTURE(major);
    const auto a = parse_ok(file(major, header("<f4", "(2, 3)", false, major), kF4Data));
    CHECK(a.descr == "<f4");
    CHECK(a.kind == mra::npy::Kind::floating);
    CHECK(a.shape == std::vector<int64_t>{2, 3});
    CHECK(a.values == std::vector<double>{1.5, -2.0, 0.25, 3.0, 4.0, -0.5});
  }
}

TEST_CASE("every supported dtype is widened to double exactly") {
  SUBCASE("float16, including subnormals, infinities, NaN and signed zero") {
    const std::string bits = raw<uint16_t>({0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0xfc00, 0x8000, 0x7e00});
    const auto a = parse_ok(file(1, header("<f2", "(8,)"), bits));
    CHECK(a.values[0] == 1.0);
    CHECK(a.values[1] == -2.0);
    CHECK(a.values[2] == std::ldexp(1.0, -24));
    CHECK(a.values[3] == 65504.0);
    CHECK(a.values[4] == std::numeric_limits<double>::infinity());
    CHECK(a.values[5] == -std::numeric_limits<double>::infinity());
    CHECK((a.values[6] == 0.0 && std::signbit(a.values[6])));
    CHECK(std::isnan(a.values[7]));
  }
  SUBCASE("float16 normal values") {
    const auto a = parse_ok(file(1, header("<f2", "(3,)"), npy_bytes::raw_half({0.375, -1.75, 1024.0})));
    CHECK(a.values == std::vector<double>{0.375, -1.75, 1024.0});
  }
  SUBCASE("float64") {
    const auto a = parse_ok(file(1, header("<f8", "(2,)"), raw<double>({0.1, -1e300})));
    CHECK(a.values == std::vector<double>{0.1, -1e300});
  }
  SUBCASE("bool") {
    const auto a = parse_ok(file(1, header("|b1", "(3,)"), raw<bool>({1, 0, 1})));
    CHECK(a.kind == mra::npy::Kind::boolean);
    CHECK(a.values == std::vector<double>{1, 0, 1});
  }
  SUBCASE("integers of every width and signedness") {
    struct Case {
      std::string descr, data;
      std::vector<double> expected;
    };
    const Case cases[] = {
        {"|i1", raw<int8_t>({-128, 127, 0}), {-128, 127, 0}},
        {"|u1", raw<uint8_t>({255, 1, 0}), {255, 1, 0}},
        {"<i2", raw<int16_t>({-32768, 32767, 1}), {-32768, 32767, 1}},
        {"<u2", raw<uint16_t>({65535, 0, 1}), {65535, 0, 1}},
        {"<i4", raw<int32_t>({-2147483648.0, 7, 1}), {-2147483648.0, 7, 1}},
        {"<u4", raw<uint32_t>({4294967295.0, 0, 1}), {4294967295.0, 0, 1}},
        {"<i8", raw<int64_t>({-9007199254740992.0, 0, 1}), {-9007199254740992.0, 0, 1}},
        {"<u8", raw<uint64_t>({9223372036854775808.0, 0, 1}), {9223372036854775808.0, 0, 1}},
    };
    for (const Case& c : cases) {
      CAPTURE(c.descr);
      const auto a = parse_ok(file(1, header(c.descr, "(3,)"), c.data));
      CHECK(a.kind == mra::npy::Kind::integer);
      CHECK(a.values == c.expected);
    }
  }
}

TEST_CASE("ranks 0 to 4 and empty dimensions") {
  CHECK(parse_ok(file(1, header("<f4", "()"), raw<float>({7}))).values == std::vector<double>{7});
  CHECK(parse_ok(file(1, header("<f4", "(6,)"), kF4Data)).shape == std::vector<int64_t>{6});
  CHECK(parse_ok(file(1, header("<f4", "(1, 2, 3)"), kF4Data)).shape == std::vector<int64_t>{1, 2, 3});
  CHECK(parse_ok(file(1, header("<f4", "(1, 1, 2, 3)"), kF4Data)).shape == std::vector<int64_t>{1, 1, 2, 3});
  const auto empty = parse_ok(file(1, header("<f4", "(0, 5)"), ""));
  CHECK(empty.shape == std::vector<int64_t>{0, 5});
  CHECK(empty.values.empty());
  // A zero dimension makes any product empty, even with a huge neighbour.
  CHECK(parse_ok(file(1, header("<f4", "(0, 9223372036854775807)"), "")).values.empty());
  check_rejected(file(1, header("<f4", "(0, 5)"), "abcd"), "size mismatch");
}

TEST_CASE("header spellings numpy and other writers produce") {
  SUBCASE("keys in any order, double quotes, no trailing comma, no padding") {
    parse_ok(file(1, "{\"shape\": (2, 3), \"fortran_order\": False, \"descr\": \"<f4\"}", kF4Data));
  }
  SUBCASE("a trailing comma inside the shape and extra whitespace") {
    parse_ok(file(1, "{ 'descr' : '<f4' ,'fortran_order':False,'shape':( 2 , 3 , ) }  \n", kF4Data));
  }
  SUBCASE("numpy 2's spare growth spaces") {
    parse_ok(file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + std::string(70, ' ') + "\n",
                  kF4Data));
  }
  SUBCASE("'<' on one-byte types") { parse_ok(file(1, header("<u1", "(2,)"), std::string("\x01\x00", 2))); }
}

TEST_CASE("malformed prefixes are rejected") {
  check_rejected("", "bad magic");
  check_rejected("PK\x03\x04 not an npy file at all", "a .npz (zip) archive, not a .npy file");
  check_rejected("PK\x05\x06", "bad magic");
  check_rejected(std::string("\x93NUMPY", 6), "truncated");
  check_rejected(std::string("\x93NUMPY\x01", 7), "truncated");
  check_rejected(std::string("\x93NUMPY\x01\x00\x10", 9), "truncated");
  check_rejected(std::string("\x93NUMPY\x02\x00\x10\x00\x00", 11), "truncated");
  check_rejected(file(4, header("<f4", "(2, 3)"), kF4Data), "version 4.0");
  check_rejected(file(0, header("<f4", "(2, 3)"), kF4Data), "version 0.0");
  check_rejected(file(1, header("<f4", "(2, 3)"), kF4Data, 1), "version 1.1");
}

TEST_CASE("header lengths beyond the file are rejected before anything is read") {
  // A 2.0 header length of 0xffffffff on a tiny file.
  check_rejected(std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14), "truncated");
  // A 1.0 header that claims a few bytes more than the file holds.
  std::string short_header = file(1, header("<f4", "(2, 3)"), "");
  short_header.resize(short_header.size() - 3);
  check_rejected(short_header, "truncated");
}

TEST_CASE("malformed header dicts are rejected") {
  const auto with = [](const std::string& dict) { return file(1, dict, kF4Data); };
  check_rejected(with("not a dict"), "malformed header");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False}"), "no 'shape'");
  check_rejected(with("{'descr': '<f4', 'shape': (2, 3)}"), "no 'fortran_order'");
  check_rejected(with("{'fortran_order': False, 'shape': (2, 3)}"), "no 'descr'");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}"), "unexpected key");
  check_rejected(with("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}"), "twice");
  check_rejected(with("{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}"), "malformed header");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)"), "malformed header");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}"), "not a tuple");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}"), "non-negative integer");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 3)}"), "malformed header");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (6)}"), "trailing comma");
  check_rejected(with("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}"), "True or False");
  check_rejected(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk"), "after the closing");
  check_rejected(with("{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2, 3)}"), "unsupported character");
  std::string nul = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}";
  nul.push_back('\0');
  check_rejected(with(nul), "after the closing");
}

TEST_CASE("unsupported dtypes and layouts are rejected by name") {
  check_rejected(file(1, header(">f4", "(2, 3)"), kF4Data), "big-endian");
  check_rejected(file(1, header(">i8", "(3,)"), raw<int64_t>({1, 2, 3})), "big-endian");
  check_rejected(file(1, header("<c8", "(3,)"), raw<double>({1, 2, 3})), "unsupported dtype '<c8'");
  check_rejected(file(1, header("|O", "(3,)"), raw<int64_t>({1, 2, 3})), "unsupported dtype '|O'");
  check_rejected(file(1, header("<V2", "(3,)"), raw<int16_t>({1, 2, 3})), "unsupported dtype '<V2'");
  check_rejected(file(1, header("=f4", "(2, 3)"), kF4Data), "unsupported dtype");
  check_rejected(file(1, header("|f4", "(2, 3)"), kF4Data), "unsupported dtype");
  check_rejected(file(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}", kF4Data),
                 "structured");
  check_rejected(file(1, header("<f4", "(2, 3)", true), kF4Data), "fortran_order True");
}

TEST_CASE("shapes that lie about the data are rejected without allocating for them") {
  check_rejected(file(1, header("<f4", "(2, 4)"), kF4Data), "truncated: the shape needs 8 elements");
  check_rejected(file(1, header("<f4", "(2, 2)"), kF4Data), "size mismatch");
  check_rejected(file(1, header("<f4", "(2, 3)"), kF4Data.substr(0, 23)), "truncated");
  check_rejected(file(1, header("<f4", "(2, 3)"), kF4Data + "x"), "size mismatch");
  // Products far beyond memory but within 64 bits: must fail on the size check, not in the allocator.
  check_rejected(file(1, header("<f8", "(1000000000, 1000000000)"), kF4Data), "truncated");
  check_rejected(file(1, header("<f8", "(2305843009213693951,)"), kF4Data), "truncated");
  // Products that overflow 64 bits, and dimensions that do not fit in 64 bits by themselves.
  check_rejected(file(1, header("<f4", "(4294967296, 4294967296)"), kF4Data), "does not fit in 64 bits");
  check_rejected(file(1, header("<f4", "(9223372036854775807, 2)"), kF4Data), "does not fit in 64 bits");
  check_rejected(file(1, header("<f4", "(99999999999999999999,)"), kF4Data), "does not fit in 64 bits");
}

TEST_CASE("every truncation and every single-byte corruption of a valid file is handled") {
  const std::string good = file(2, header("<f2", "(2, 3)", false, 2), npy_bytes::raw_half({1, 2, 3, 4, 5, 6}));
  for (size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK_FALSE(mra::npy::parse(good.substr(0, n)).ok());
  }
  // Corruptions may or may not still be valid files; they must never crash or allocate wildly.
  int accepted = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    for (unsigned char value : {0x00, 0x09, 0x20, 0x27, 0x28, 0x29, 0x2c, 0x30, 0x39, 0x7b, 0x7d, 0xff}) {
      std::string bad = good;
      bad[at] = static_cast<char>(value);
      const mra::npy::Parsed p = mra::npy::parse(bad);
      accepted += p.ok();
      if (p.ok()) CHECK(p.array.values.size() <= bad.size());
    }
  }
  CHECK(accepted > 0);
}

TEST_CASE("the writer produces numpy's float32 version 1.0 layout") {
  const float data[] = {1.0f, -2.5f, 3.25f, 0.0f, 5.0f, 6.0f};
  SUBCASE("a 4-D shape, byte for byte") {
    const std::string bytes = mra::npy::serialize_f32({1, 1, 2, 3}, data);
    const std::string expected_header = header("<f4", "(1, 1, 2, 3)");
    CHECK(bytes == file(1, expected_header, raw<float>({1.0, -2.5, 3.25, 0.0, 5.0, 6.0})));
    CHECK((10 + expected_header.size()) % 64 == 0);
  }
  SUBCASE("a 1-D shape is a one-element tuple") {
    const std::string bytes = mra::npy::serialize_f32({6}, data);
    CHECK(bytes.find("'shape': (6,), }") != std::string::npos);
    CHECK(parse_ok(bytes).values == std::vector<double>{1.0, -2.5, 3.25, 0.0, 5.0, 6.0});
  }
}

TEST_CASE("files: load and atomic write") {
  const auto dir = std::filesystem::temp_directory_path() / ("mra-npy-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const float data[] = {1, 2, 3};
  const std::string path = (dir / "x.npy").string();

  CHECK(mra::npy::write_file_atomic(path, mra::npy::serialize_f32({3}, data)).empty());
  CHECK(mra::npy::load(path).array.values == std::vector<double>{1, 2, 3});
  // Overwriting replaces the whole file.
  CHECK(mra::npy::write_file_atomic(path, mra::npy::serialize_f32({2}, data)).empty());
  CHECK(mra::npy::load(path).array.shape == std::vector<int64_t>{2});

  const std::string missing = (dir / "no-such-folder" / "y.npy").string();
  CHECK_FALSE(mra::npy::write_file_atomic(missing, "data").empty());
  CHECK_FALSE(std::filesystem::exists(missing));
  // Renaming onto a folder fails after the temporary file was written: it must be cleaned up.
  std::filesystem::create_directories(dir / "a-folder");
  CHECK_FALSE(mra::npy::write_file_atomic((dir / "a-folder").string(), "data").empty());
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++entries;
  CHECK(entries == 2);  // x.npy and a-folder, no temporary files

  const mra::npy::Parsed unreadable = mra::npy::load((dir / "absent.npy").string());
  CHECK(unreadable.error.find("cannot open") != std::string::npos);
  std::filesystem::remove_all(dir);
}
