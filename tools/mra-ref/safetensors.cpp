// tools/mra-ref/safetensors.cpp: the safetensors reader and writer declared in safetensors.h. Tested by
// tests/cli, fuzzed (safetensors).
#include "safetensors.h"
#include "half.h"

#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>

namespace mra::safetensors {
namespace {

static_assert(std::endian::native == std::endian::little, "the safetensors writer assumes a little-endian host");

struct Malformed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) { throw Malformed(what); }

struct Tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data that follow the header
};

// The safetensors dtypes this reader takes, as .npy descriptors (BF16, which numpy lacks, is read as its bits).
std::optional<std::string> descr_of(const std::string& dtype) {
  static const std::pair<const char*, const char*> kTable[] = {
      {"F64", "<f8"}, {"F32", "<f4"}, {"F16", "<f2"}, {"BF16", "<u2"}, {"BOOL", "|b1"}, {"U8", "|u1"},
      {"I8", "|i1"},  {"U16", "<u2"}, {"I16", "<i2"}, {"U32", "<u4"},  {"I32", "<i4"},  {"U64", "<u8"}, {"I64", "<i8"}};
  for (const auto& [name, descr] : kTable)
    if (dtype == name) return descr;
  return std::nullopt;
}

// The JSON of a safetensors header, read as far as the format uses it.
class Json {
 public:
  explicit Json(std::string_view text) : text_(text) {}

  void space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  char peek() {
    space();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }

  void expect(char c, const std::string& where) {
    if (peek() != c) fail("malformed header: expected '" + std::string(1, c) + "' " + where);
    ++pos_;
  }

  bool at_end() {
    space();
    return pos_ == text_.size();
  }

  // {"key": value, ...}: calls `member(key)` with the reader at the value, which `member` must consume.
  template <typename Member>
  void object(const std::string& where, const Member& member) {
    expect('{', where);
    if (peek() == '}') {
      ++pos_;
      return;
    }
    while (true) {
      const std::string key = string(where);
      expect(':', "after key " + npy::quoted(key));
      member(key);
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}', where);
      return;
    }
  }

  // [n, ...] of non-negative integers.
  std::vector<int64_t> integers(const std::string& where) {
    std::vector<int64_t> values;
    expect('[', where);
    if (peek() == ']') {
      ++pos_;
      return values;
    }
    while (true) {
      values.push_back(integer(where));
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']', where);
      return values;
    }
  }

  std::string string(const std::string& where) {
    if (peek() != '"') fail("malformed header: expected a string " + where);
    ++pos_;
    std::string s;
    while (true) {
      if (pos_ == text_.size()) fail("malformed header: unterminated string " + where);
      const char c = text_[pos_++];
      if (c == '"') return s;
      if (static_cast<unsigned char>(c) < 0x20) fail("malformed header: control character in a string " + where);
      if (c != '\\') {
        s += c;
        continue;
      }
      if (pos_ == text_.size()) fail("malformed header: unterminated string " + where);
      const char e = text_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': s += e; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': utf8(s, code_point(where)); break;
        default: fail("malformed header: bad escape in a string " + where);
      }
    }
  }

 private:
  int64_t integer(const std::string& where) {
    if (peek() < '0' || peek() > '9') fail("malformed header: expected a non-negative integer " + where);
    int64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const int digit = text_[pos_++] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10)
        fail("malformed header: an integer does not fit in 64 bits " + where);
      value = value * 10 + digit;
    }
    return value;
  }

  unsigned hex4(const std::string& where) {
    if (text_.size() - pos_ < 4) fail("malformed header: truncated \\u escape " + where);
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) fail("malformed header: bad \\u escape " + where);
      v = v * 16 + static_cast<unsigned>(d);
    }
    return v;
  }

  // After "\u": one code point, a surrogate pair joined.
  unsigned code_point(const std::string& where) {
    const unsigned high = hex4(where);
    if (high < 0xd800 || high > 0xdfff) return high;
    if (high > 0xdbff || text_.substr(pos_, 2) != "\\u") fail("malformed header: unpaired surrogate " + where);
    pos_ += 2;
    const unsigned low = hex4(where);
    if (low < 0xdc00 || low > 0xdfff) fail("malformed header: unpaired surrogate " + where);
    return 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
  }

  static void utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// The header's tensors, each checked against the data that follow it: known dtype, an element count that fits,
// a byte range inside the file whose length is exactly what the shape needs.
std::vector<Tensor> header(std::string_view bytes, std::string_view& data) {
  if (bytes.size() < 8) fail("not a safetensors file: shorter than its 8-byte header length");
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (length > bytes.size() - 8)
    fail("truncated: the header length is " + std::to_string(length) + " bytes, the file holds " +
         std::to_string(bytes.size() - 8) + " after it");
  data = bytes.substr(8 + static_cast<size_t>(length));

  Json json(bytes.substr(8, static_cast<size_t>(length)));
  if (json.peek() != '{') fail("not a safetensors file: the header is not a JSON object");
  std::vector<Tensor> tensors;
  std::set<std::string> names;
  json.object("in the header", [&](const std::string& name) {
    if (!names.insert(name).second) fail("malformed header: " + npy::quoted(name) + " given twice");
    if (name == "__metadata__") {
      json.object("in __metadata__", [&](const std::string& key) { json.string("as the value of " + npy::quoted(key)); });
      return;
    }
    Tensor t;
    t.name = name;
    const std::string where = "in tensor " + npy::quoted(name);
    bool have_dtype = false, have_shape = false, have_offsets = false;
    json.object(where, [&](const std::string& key) {
      const auto once = [&](bool& have) {
        if (have) fail("malformed header: " + npy::quoted(key) + " given twice " + where);
        have = true;
      };
      if (key == "dtype") {
        once(have_dtype);
        t.dtype = json.string(where);
      } else if (key == "shape") {
        once(have_shape);
        t.shape = json.integers(where);
      } else if (key == "data_offsets") {
        once(have_offsets);
        const std::vector<int64_t> offsets = json.integers(where);
        if (offsets.size() != 2) fail("malformed header: 'data_offsets' is not [begin, end] " + where);
        t.begin = static_cast<uint64_t>(offsets[0]);
        t.end = static_cast<uint64_t>(offsets[1]);
      } else {
        fail("malformed header: unexpected key " + npy::quoted(key) + " " + where);
      }
    });
    if (!have_dtype || !have_shape || !have_offsets)
      fail("malformed header: tensor " + npy::quoted(name) + " lacks " + (!have_dtype ? "'dtype'" : !have_shape ? "'shape'" : "'data_offsets'"));
    const std::optional<std::string> descr = descr_of(t.dtype);
    if (!descr)
      fail("tensor " + npy::quoted(name) + ": dtype " + npy::quoted(t.dtype) + " is not supported (F64, F32, F16, BF16, BOOL, integers)");
    if (t.begin > t.end || t.end > data.size())
      fail("tensor " + npy::quoted(name) + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] lie outside the " + std::to_string(data.size()) + " data bytes");
    tensors.push_back(std::move(t));
  });
  if (!json.at_end()) fail("malformed header: text after the closing '}'");
  return tensors;
}

npy::Array decode(std::string_view data, const Tensor& t) {
  const std::string descr = *descr_of(t.dtype);
  npy::Parsed p = npy::decode(descr, t.shape, data.substr(t.begin, t.end - t.begin));
  if (!p.ok()) fail("tensor " + npy::quoted(t.name) + ": " + p.error);
  if (t.dtype == "BF16") {
    // Read as unsigned integers: the bits.
    for (double& x : p.array.values) x = half::bfloat16_to_float(static_cast<uint16_t>(x));
    p.array.kind = npy::Kind::floating;
  }
  p.array.descr = t.dtype;
  return std::move(p.array);
}

template <typename Work>
auto guarded(const Work& work, std::string& error) -> decltype(work()) {
  try {
    return work();
  } catch (const Malformed& e) {
    error = e.what();
    return {};
  }
}

std::string json_string(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

npy::Listing list(std::string_view bytes) {
  npy::Listing listing;
  const std::vector<Tensor> tensors = guarded(
      [&] {
        std::string_view data;
        return header(bytes, data);
      },
      listing.error);
  for (const Tensor& t : tensors) listing.names.push_back(t.name);
  return listing;
}

npy::Parsed read(std::string_view bytes, const std::string& name) {
  npy::Parsed result;
  result.array = guarded(
      [&]() -> npy::Array {
        std::string_view data;
        const std::vector<Tensor> tensors = header(bytes, data);
        std::vector<std::string> names;
        for (const Tensor& t : tensors) {
          if (t.name == name) return decode(data, t);
          names.push_back(t.name);
        }
        fail("no tensor " + npy::quoted(name) + " in the file (it holds " +
             (names.empty() ? "no tensors" : npy::quoted_list(names)) + ")");
      },
      result.error);
  return result;
}

std::string serialize_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  uint64_t count = 1;
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    count *= static_cast<uint64_t>(shape[i]);
    if (i) dims += ',';
    dims += std::to_string(shape[i]);
  }
  const uint64_t size = count * sizeof(float);
  std::string text = "{";
  text += json_string(name);
  text += ":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[0," + std::to_string(size) + "]}}";
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  out += text;
  out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(size));
  return out;
}

}  // namespace mra::safetensors
