// tests/cli/files_test.cpp: unit tests of mra-ref's container formats on hand-built byte buffers: DEFLATE
// (against streams Python's zlib wrote), ZIP (archives laid out as numpy writes them, zip64 extra fields
// included), .npz, safetensors, and how a file argument names an array (files.h).
//   ctest --test-dir build -L cli      or      build/tests/cli/files_test
#include "common/doctest.h"

#include <bit>
#include <cmath>
#include <string>
#include <vector>

#include "files.h"
#include "inflate.h"
#include "npy_bytes.h"
#include "npz.h"
#include "safetensors.h"
#include "zip.h"

using npy_bytes::raw;

namespace {

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

void check_one_line(const std::string& error, const std::string& expected) {
  INFO("expected an error containing '" << expected << "', got '" << error << "'");
  CHECK(error.find(expected) != std::string::npos);
  CHECK(error.find('\n') == std::string::npos);
}

std::string le(uint64_t value, int size) {
  std::string out;
  for (int i = 0; i < size; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// A one-member ZIP archive laid out as numpy's np.savez writes it (Python's zipfile with force_zip64): the
// local header's sizes saturated to 0xffffffff with a zip64 extra field holding them, the central directory's
// plain. `method` 8 expects `stored` to be a raw deflate stream of `size` bytes.
std::string numpy_style_zip(const std::string& name, const std::string& stored, uint32_t crc, uint64_t size,
                            uint16_t method = 0) {
  const std::string extra = le(1, 2) + le(16, 2) + le(size, 8) + le(stored.size(), 8);
  const auto fields = [&](bool local) {
    return le(45, 2) + le(0, 2) + le(method, 2) + le(0, 2) + le(0x21, 2) + le(crc, 4) +
           le(local ? 0xffffffff : stored.size(), 4) + le(local ? 0xffffffff : size, 4) + le(name.size(), 2) +
           le(local ? extra.size() : 0, 2);
  };
  std::string out = le(0x04034b50, 4) + fields(true) + name + extra + stored;
  const std::string central = le(0x02014b50, 4) + le(45, 2) + fields(false) + le(0, 2) + le(0, 2) + le(0, 2) +
                              le(0, 4) + le(0, 4) + name;
  const uint64_t offset = out.size();
  out += central;
  out += le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(1, 2) + le(1, 2) + le(central.size(), 4) + le(offset, 4) +
         le(0, 2);
  return out;
}

const std::string kSix = raw<float>({1.5, -2.0, 0.25, 3.0, 4.0, -0.5});
const std::string kNpy = npy_bytes::file(1, npy_bytes::header("<f4", "(2, 3)"), kSix);

// A safetensors file: the header text as given (no padding), then the data.
std::string safetensors_file(const std::string& header, const std::string& data) {
  return le(header.size(), 8) + header + data;
}

}  // namespace

TEST_CASE("CRC-32 of the standard check string") { CHECK(mra::zip::crc32("123456789") == 0xcbf43926u); }

TEST_CASE("inflate decodes stored, fixed-Huffman and dynamic-Huffman blocks written by zlib") {
  std::string out, error;
  SUBCASE("stored") {
    REQUIRE(mra::zip::inflate(unhex("010700f8ff73746f72656421"), 7, out, error));
    CHECK(out == "stored!");
  }
  SUBCASE("fixed, with overlapping back-references") {
    REQUIRE(mra::zip::inflate(unhex("4b4c4a4ec48600"), 24, out, error));
    CHECK(out == "abcabcabcabcabcabcabcabc");
  }
  SUBCASE("dynamic") {
    const std::string stream = unhex(
        "95d1b511c0401004b05a9f99a97da71b9ce7ed02148965d9ed8abceae14f92cdaec08b1eee24d1cc0aaca8e17612d5ccc0b2ea7647"
        "51f5f40c59462629e6906d6491620d99b9328eac506c22f3c80ec514b27e650999a09845b690058abd67f47f19e25f46b866e8af19"
        "0f");
    std::string expected;
    for (uint64_t i = 0; i < 600; ++i) expected += static_cast<char>(97 + ((i * 2654435761ull) >> 7) % 23);
    REQUIRE(mra::zip::inflate(stream, 600, out, error));
    CHECK(out == expected);
  }
}

TEST_CASE("inflate refuses malformed streams and never outgrows its limit") {
  std::string out, error;
  CHECK_FALSE(mra::zip::inflate(unhex("4b4c4a4ec486"), 24, out, error));  // the final byte cut off
  check_one_line(error, "ends early");
  CHECK_FALSE(mra::zip::inflate(unhex("4b4c4a4ec48600"), 23, out, error));
  check_one_line(error, "beyond the declared size");
  CHECK(out.size() <= 23);
  CHECK_FALSE(mra::zip::inflate(unhex("07"), 100, out, error));  // final block of reserved type 3
  check_one_line(error, "reserved type");
  CHECK_FALSE(mra::zip::inflate(unhex("010700f7ff73746f72656421"), 7, out, error));  // NLEN is not ~LEN
  check_one_line(error, "length check");
  // A fixed block whose first code is a match (length 3, distance 1) with nothing before it.
  CHECK_FALSE(mra::zip::inflate(unhex("030200"), 100, out, error));
  check_one_line(error, "before its start");
}

TEST_CASE("ZIP: an archive laid out as numpy writes it, stored and deflated") {
  SUBCASE("stored, zip64 extra field in the local header") {
    const std::string zip = numpy_style_zip("q.npy", kNpy, mra::zip::crc32(kNpy), kNpy.size());
    const mra::zip::Index index = mra::zip::index(zip);
    REQUIRE(index.ok());
    REQUIRE(index.entries.size() == 1);
    CHECK(index.entries[0].name == "q.npy");
    const mra::zip::Extracted member = mra::zip::extract(zip, index.entries[0]);
    REQUIRE(member.ok());
    CHECK(member.data == kNpy);
  }
  SUBCASE("deflated") {
    const std::string zip = numpy_style_zip("s.txt", unhex("010700f8ff73746f72656421"), mra::zip::crc32("stored!"), 7, 8);
    const mra::zip::Index index = mra::zip::index(zip);
    REQUIRE(index.ok());
    const mra::zip::Extracted member = mra::zip::extract(zip, index.entries.at(0));
    REQUIRE(member.ok());
    CHECK(member.data == "stored!");
  }
}

TEST_CASE("ZIP: corrupt archives are refused with one line") {
  const std::string good = numpy_style_zip("q.npy", kNpy, mra::zip::crc32(kNpy), kNpy.size());
  SUBCASE("a CRC mismatch") {
    std::string bad = good;
    bad[bad.find("\x93NUMPY") + 80] ^= 1;  // a data byte
    const auto index = mra::zip::index(bad);
    REQUIRE(index.ok());
    check_one_line(mra::zip::extract(bad, index.entries[0]).error, "CRC-32 mismatch");
  }
  SUBCASE("no end record") { check_one_line(mra::zip::index(good.substr(0, good.size() - 1)).error, "no end of central directory"); }
  SUBCASE("a directory past the end of the file") {
    std::string bad = good;
    bad[bad.size() - 6] = '\x7f';  // the directory offset's low byte
    bad[bad.size() - 3] = '\x7f';  // and its high byte
    check_one_line(mra::zip::index(bad).error, "past the end");
  }
  SUBCASE("an entry count the directory cannot hold") {
    std::string bad = good;
    bad[bad.size() - 12] = '\x50';  // total entries 0x50 in a 51-byte directory
    check_one_line(mra::zip::index(bad).error, "too small for its entry count");
  }
  SUBCASE("a compressed size that runs past the file") {
    const std::string bad = numpy_style_zip("q.npy", kNpy, mra::zip::crc32(kNpy), kNpy.size());
    mra::zip::Index index = mra::zip::index(bad);
    REQUIRE(index.ok());
    index.entries[0].compressed_size = index.entries[0].size = 1u << 30;
    check_one_line(mra::zip::extract(bad, index.entries[0]).error, "past the end of the file");
  }
  SUBCASE("an unsupported method") {
    const std::string bad = numpy_style_zip("q.npy", kNpy, mra::zip::crc32(kNpy), kNpy.size(), 12);
    const auto index = mra::zip::index(bad);
    REQUIRE(index.ok());
    check_one_line(mra::zip::extract(bad, index.entries[0]).error, "compression method 12");
  }
}

TEST_CASE("ZIP: the writer's archives read back, with the CRC and sizes a reader checks") {
  const std::string zip = mra::zip::serialize_stored({{"a.npy", "first"}, {"b.npy", "second!"}});
  const mra::zip::Index index = mra::zip::index(zip);
  REQUIRE(index.ok());
  REQUIRE(index.entries.size() == 2);
  CHECK(mra::zip::extract(zip, index.entries[0]).data == "first");
  CHECK(mra::zip::extract(zip, index.entries[1]).data == "second!");
  CHECK(index.entries[1].crc == mra::zip::crc32("second!"));
  const auto twice = mra::zip::index(mra::zip::serialize_stored({{"a", "x"}, {"a", "y"}}));
  check_one_line(twice.error, "appears twice");
}

TEST_CASE(".npz: arrays by name, other members ignored, a missing name lists the names") {
  const std::vector<float> data{1, 2, 3, 4, 5, 6};
  const std::string one = mra::npz::serialize_f32("out", {2, 3}, data.data());
  const mra::npy::Parsed read = mra::npz::read(one, "out");
  REQUIRE(read.ok());
  CHECK(read.array.shape == std::vector<int64_t>{2, 3});
  CHECK(read.array.values == std::vector<double>{1, 2, 3, 4, 5, 6});

  const std::string mixed = mra::zip::serialize_stored({{"q.npy", kNpy}, {"notes.txt", "x"}, {"k.npy", "junk"}});
  CHECK(mra::npz::list(mixed).names == std::vector<std::string>{"q", "k"});
  CHECK(mra::npz::read(mixed, "q").ok());
  check_one_line(mra::npz::read(mixed, "k").error, "member 'k.npy': not a .npy file");
  check_one_line(mra::npz::read(mixed, "v").error, "no array 'v' in the archive (it holds 'q', 'k')");
  // Names come from the file: a control character in one is escaped, so that the message stays one line.
  const std::string newline = mra::zip::serialize_stored({{"a\nb.npy", "junk"}});
  check_one_line(mra::npz::read(newline, "a\nb").error, "member 'a\\x0ab.npy': not a .npy file");
}

TEST_CASE("safetensors: every dtype, names with escapes, metadata") {
  const std::string f16 = raw<uint16_t>({0x3c00, 0xc000});
  const std::string bf16 = raw<uint16_t>({0x3fc0, 0xc040});  // 1.5, -3.0
  const std::string f64 = raw<double>({0.1, -7.0});
  const std::string b = std::string("\x01\x00", 2);
  const std::string i64 = raw<int64_t>({-5, 1ll << 40});
  const std::string data = kSix + f16 + bf16 + f64 + b + i64;  // 24 + 4 + 4 + 16 + 2 + 16
  const std::string header =
      "{\"__metadata__\": {\"format\": \"pt\"}, \"q\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
      "\"h\\u00e9\\ud83d\\ude00\":{\"shape\":[2],\"dtype\":\"F16\",\"data_offsets\":[24,28]},"
      " \"b16\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [28, 32]},"
      " \"d\": {\"dtype\": \"F64\", \"shape\": [1, 2], \"data_offsets\": [32, 48]},"
      " \"m\": {\"dtype\": \"BOOL\", \"shape\": [2], \"data_offsets\": [48, 50]},"
      " \"i\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [50, 66]},"
      " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}   ";
  const std::string file = safetensors_file(header, data);
  const auto listing = mra::safetensors::list(file);
  REQUIRE(listing.ok());
  CHECK(listing.names == std::vector<std::string>{"q", "h\xc3\xa9\xf0\x9f\x98\x80", "b16", "d", "m", "i", "s"});
  const auto get = [&](const std::string& name) {
    const mra::npy::Parsed p = mra::safetensors::read(file, name);
    INFO(name << ": " << p.error);
    REQUIRE(p.ok());
    return p.array;
  };
  CHECK(get("q").values == std::vector<double>{1.5, -2.0, 0.25, 3.0, 4.0, -0.5});
  CHECK(get("q").descr == "F32");
  CHECK(get("h\xc3\xa9\xf0\x9f\x98\x80").values == std::vector<double>{1.0, -2.0});
  CHECK(get("b16").values == std::vector<double>{1.5, -3.0});
  CHECK(get("b16").kind == mra::npy::Kind::floating);
  CHECK(get("d").values == std::vector<double>{0.1, -7.0});
  CHECK(get("m").kind == mra::npy::Kind::boolean);
  CHECK(get("i").values == std::vector<double>{-5.0, std::ldexp(1.0, 40)});
  CHECK(get("s").shape.empty());
  CHECK(get("s").values == std::vector<double>{1.5});
}

TEST_CASE("safetensors: hostile headers are refused with one line naming the tensor") {
  const auto error = [](const std::string& header, const std::string& data = std::string(24, '\0')) {
    return mra::safetensors::read(safetensors_file(header, data), "q").error;
  };
  check_one_line(mra::safetensors::read("short", "q").error, "shorter than its 8-byte header length");
  check_one_line(mra::safetensors::read(le(1ull << 62, 8) + "{}", "q").error, "truncated: the header length");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 28]}})"),
                 "tensor 'q': data_offsets [0, 28] lie outside the 24 data bytes");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 24]}})"), "tensor 'q': size mismatch");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 24]}})"),
                 "tensor 'q': the shape's element count does not fit");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 24]}})"),
                 "does not fit in 64 bits in tensor 'q'");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [-6], "data_offsets": [0, 24]}})"), "non-negative integer");
  check_one_line(error(R"({"q": {"dtype": "F8_E4M3", "shape": [6], "data_offsets": [0, 6]}})"),
                 "tensor 'q': dtype 'F8_E4M3' is not supported");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [6], "data_offsets": [24, 0]}})"), "lie outside");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [6]}})"), "tensor 'q' lacks 'data_offsets'");
  check_one_line(error(R"({"q": {"dtype": "F32", "dtype": "F32", "shape": [6], "data_offsets": [0, 24]}})"),
                 "'dtype' given twice in tensor 'q'");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24], "x": 1}})"),
                 "unexpected key 'x' in tensor 'q'");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}, "q": {}})"), "'q' given twice");
  check_one_line(error(R"({"q": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}} x)"), "text after the closing");
  check_one_line(error(R"({"q": {"dtype": "F32, "shape": [6]}})"), "expected '}' in tensor 'q'");
  check_one_line(error("{\"q\\ud800\": {}}"), "unpaired surrogate");
  check_one_line(error("{\"a\nb\": {}}"), "control character");
  check_one_line(error(R"({"__metadata__": {"k": 1}})"), "expected a string as the value of 'k'");
  check_one_line(error(R"([1, 2])"), "not a JSON object");
  check_one_line(error(R"({"k": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}})"), "no tensor 'q' in the file (it holds 'k')");
}

TEST_CASE("safetensors: the writer's file reads back, its header padded to 8 bytes") {
  const std::vector<float> data{1, 2, 3, 4, 5, 6};
  const std::string file = mra::safetensors::serialize_f32("a\"b", {3, 2}, data.data());
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  CHECK(length % 8 == 0);
  CHECK(file.size() == 8 + length + 24);
  const mra::npy::Parsed p = mra::safetensors::read(file, "a\"b");
  REQUIRE(p.ok());
  CHECK(p.array.shape == std::vector<int64_t>{3, 2});
  CHECK(p.array.values == std::vector<double>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("file arguments: :NAME is split only after .npz and .safetensors") {
  const auto spec = mra::files::parse_spec("in.npz:query", "q");
  CHECK((spec.path == "in.npz" && spec.name == "query" && spec.container && !spec.safetensors));
  const auto plain = mra::files::parse_spec("in.safetensors", "k");
  CHECK((plain.path == "in.safetensors" && plain.name == "k" && plain.safetensors));
  const auto colon = mra::files::parse_spec("dir:x/q.npy", "q");
  CHECK((colon.path == "dir:x/q.npy" && !colon.container));
  const auto nested = mra::files::parse_spec("a:b.npz:c", "q");
  CHECK((nested.path == "a:b.npz" && nested.name == "c"));
}
