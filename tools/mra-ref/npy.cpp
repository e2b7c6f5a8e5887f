// tools/mra-ref/npy.cpp: the .npy reader and writer declared in npy.h. Tested by tests/cli (ctest -L cli).
#include "npy.h"

#include "half.h"
#include "output.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mra::npy {
namespace {

// The reader assembles values from bytes and works on any host; the writer copies floats as they lie in
// memory, which is '<f4' only on a little-endian host.
static_assert(std::endian::native == std::endian::little, "the .npy writer assumes a little-endian host");

constexpr std::string_view kMagic = "\x93NUMPY";
// numpy itself refuses headers over 10 000 bytes by default; this bound only keeps a stream from feeding an
// endless header.
constexpr uint64_t kMaxHeaderBytes = uint64_t(1) << 20;

// Parse failures travel as this exception inside the parser and leave `parse` as Parsed::error.
struct Malformed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) { throw Malformed(what); }

struct DType {
  Kind kind;
  int size;
  bool is_signed;
};

DType dtype_of(const std::string& descr) {
  if (descr.size() < 3) fail("unsupported dtype '" + descr + "'");
  const char order = descr[0];
  const std::string code = descr.substr(1);
  std::optional<DType> t;
  if (code == "f2") t = DType{Kind::floating, 2, true};
  if (code == "f4") t = DType{Kind::floating, 4, true};
  if (code == "f8") t = DType{Kind::floating, 8, true};
  if (code == "b1") t = DType{Kind::boolean, 1, false};
  if (code == "i1") t = DType{Kind::integer, 1, true};
  if (code == "u1") t = DType{Kind::integer, 1, false};
  if (code == "i2") t = DType{Kind::integer, 2, true};
  if (code == "u2") t = DType{Kind::integer, 2, false};
  if (code == "i4") t = DType{Kind::integer, 4, true};
  if (code == "u4") t = DType{Kind::integer, 4, false};
  if (code == "i8") t = DType{Kind::integer, 8, true};
  if (code == "u8") t = DType{Kind::integer, 8, false};
  if (!t) fail("unsupported dtype '" + descr + "' (supported: float16/32/64, bool, integers)");
  // numpy writes '|' for one-byte types and '<' or '>' for wider ones; byte order is moot for one byte.
  if (t->size == 1 && (order == '|' || order == '<')) return *t;
  if (t->size > 1 && order == '<') return *t;
  if (order == '>') fail("big-endian dtype '" + descr + "' is not supported (save with dtype '<" + code + "')");
  fail("unsupported dtype '" + descr + "'");
}

// A reader of the header's Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Only the forms numpy writes are accepted: quoted strings, True/False, tuples of non-negative integers.
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  void parse(std::string& descr, bool& fortran_order, std::vector<int64_t>& shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) fail("malformed header: key 'descr' given twice");
        if (peek() != '\'' && peek() != '"') fail("unsupported dtype: structured or non-string 'descr'");
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) fail("malformed header: key 'fortran_order' given twice");
        fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) fail("malformed header: key 'shape' given twice");
        shape = tuple();
        have_shape = true;
      } else {
        fail("malformed header: unexpected key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("malformed header: expected ',' or '}'");
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) fail("malformed header: text after the closing '}'");
    if (!have_descr) fail("malformed header: no 'descr'");
    if (!have_order) fail("malformed header: no 'fortran_order'");
    if (!have_shape) fail("malformed header: no 'shape'");
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t')) ++pos_;
  }

  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("malformed header: expected '") + c + "'");
    ++pos_;
  }

  std::string string_literal() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("malformed header: expected a quoted key or string");
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail("malformed header: unterminated string");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    for (char ch : s) {
      if (ch == '\\' || static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e)
        fail("malformed header: unsupported character in a string");
    }
    pos_ = end + 1;
    return s;
  }

  bool boolean() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("malformed header: 'fortran_order' is not True or False");
  }

  int64_t integer() {
    skip_space();
    if (peek() < '0' || peek() > '9') fail("malformed header: a shape entry is not a non-negative integer");
    int64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10)
        fail("malformed header: a dimension does not fit in 64 bits");
      value = value * 10 + digit;
      ++pos_;
    }
    return value;
  }

  // (), (n,), (n, m), (n, m,) ...; a single entry needs its trailing comma, as in Python.
  std::vector<int64_t> tuple() {
    if (peek() != '(') fail("malformed header: 'shape' is not a tuple");
    ++pos_;
    std::vector<int64_t> dims;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      dims.push_back(integer());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != ')') fail("malformed header: expected ',' or ')' in 'shape'");
      if (dims.size() == 1) fail("malformed header: a one-element shape needs a trailing comma");
    }
    ++pos_;
    return dims;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

uint64_t read_le(const unsigned char* p, int size) {
  uint64_t v = 0;
  for (int i = size - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

double element(const unsigned char* p, const DType& t) {
  const uint64_t bits = read_le(p, t.size);
  if (t.kind == Kind::floating) {
    if (t.size == 2) return half::binary16_to_float(static_cast<uint16_t>(bits));
    if (t.size == 4) return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits)));
    return std::bit_cast<double>(bits);
  }
  if (!t.is_signed) return static_cast<double>(bits);
  // Sign-extend from the element's width.
  const int shift = 64 - 8 * t.size;
  return static_cast<double>(static_cast<int64_t>(bits << shift) >> shift);
}

// The fixed part of a file: magic string, version and header length.
struct Prefix {
  size_t size = 0;             // bytes before the header
  uint64_t header_length = 0;
};

// Reads the prefix from the first bytes of a file (all of them if the file is shorter than 12 bytes).
Prefix parse_prefix(std::string_view bytes) {
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    // A zip archive is what numpy writes for np.savez: say what the file is rather than only what it is not.
    // (mra-ref reads .npz from regular files, files.h; this is a pipe or a device, or a caller of parse.)
    if (bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4))
      fail("a .npz (zip) archive, not a .npy file: give it as a regular file, or save each array with np.save");
    fail("not a .npy file (bad magic string)");
  }
  if (bytes.size() < 8) fail("truncated: the file ends inside the version field");
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  const int major = u[6], minor = u[7];
  if (minor != 0 || major < 1 || major > 3)
    fail("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
  const size_t length_size = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + length_size) fail("truncated: the file ends inside the header length");
  return {8 + length_size, read_le(u + 8, static_cast<int>(length_size))};
}

[[noreturn]] void fail_header_truncated(uint64_t header_length, uint64_t available) {
  fail("truncated: the header claims " + std::to_string(header_length) + " bytes, the file holds " +
       std::to_string(available) + " after the prefix");
}

// The header's array description and the number of elements its shape holds.
struct Header {
  Array array;  // descr, kind and shape; no values yet
  DType type{};
  uint64_t count = 1;
};

// The product of non-negative dimensions, refused when it does not fit in an int64.
uint64_t element_count(const std::vector<int64_t>& shape) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    const auto dim = static_cast<uint64_t>(d);
    if (dim != 0 && count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)
      fail("the shape's element count does not fit in 64 bits");
    count *= dim;
  }
  return count;
}

Header parse_header(std::string_view text) {
  Header h;
  bool fortran_order = false;
  HeaderParser(text).parse(h.array.descr, fortran_order, h.array.shape);
  h.type = dtype_of(h.array.descr);
  h.array.kind = h.type.kind;
  if (fortran_order) fail("fortran_order True is not supported (save np.ascontiguousarray(x))");
  h.count = element_count(h.array.shape);
  return h;
}

// The data must be exactly count elements: `available` data bytes follow the header.
void check_data_size(const Header& h, uint64_t available, bool more_follow = false) {
  // Compare element counts first: count * size cannot overflow once count <= available / size.
  const auto size = static_cast<uint64_t>(h.type.size);
  const std::string holds = " elements of " + std::to_string(h.type.size) + " bytes, the file holds " +
                            std::string(more_follow ? "more than " : "") + std::to_string(available) + " data bytes";
  if (h.count > available / size) fail("truncated: the shape needs " + std::to_string(h.count) + holds);
  if (more_follow || h.count * size != available)
    fail("size mismatch: the shape needs " + std::to_string(h.count) + holds);
}

// True when the integer at `p` lies beyond ±2^53, where doubles no longer hold every integer.
bool beyond_double(const unsigned char* p, const DType& t) {
  if (t.kind != Kind::integer || t.size < 8) return false;
  constexpr uint64_t kExact = uint64_t(1) << 53;
  const uint64_t bits = read_le(p, t.size);
  if (!t.is_signed) return bits > kExact;
  const auto x = static_cast<int64_t>(bits);
  return x > int64_t(kExact) || x < -int64_t(kExact);
}

void decode(const unsigned char* data, size_t count, const DType& t, Array& a) {
  for (size_t i = 0; i < count; ++i) {
    const unsigned char* p = data + i * static_cast<size_t>(t.size);
    if (!a.rounded && beyond_double(p, t)) a.rounded = a.values.size() + 1;
    a.values.push_back(element(p, t));
  }
}

Array parse_or_throw(std::string_view bytes) {
  const Prefix prefix = parse_prefix(bytes);
  if (prefix.header_length > bytes.size() - prefix.size)
    fail_header_truncated(prefix.header_length, bytes.size() - prefix.size);
  Header h = parse_header(bytes.substr(prefix.size, prefix.header_length));
  check_data_size(h, bytes.size() - prefix.size - prefix.header_length);
  h.array.values.reserve(static_cast<size_t>(h.count));
  decode(reinterpret_cast<const unsigned char*>(bytes.data()) + prefix.size + prefix.header_length,
         static_cast<size_t>(h.count), h.type, h.array);
  return std::move(h.array);
}

// The elements of `data`, C order, as `descr` and `shape` say; the byte count must match exactly.
Array decode_or_throw(std::string descr, std::vector<int64_t> shape, std::string_view data) {
  Header h;
  h.array.descr = std::move(descr);
  h.array.shape = std::move(shape);
  h.type = dtype_of(h.array.descr);
  h.array.kind = h.type.kind;
  h.count = element_count(h.array.shape);
  check_data_size(h, data.size());
  h.array.values.reserve(static_cast<size_t>(h.count));
  decode(reinterpret_cast<const unsigned char*>(data.data()), static_cast<size_t>(h.count), h.type, h.array);
  return std::move(h.array);
}

// Reads up to `n` more bytes of `fd` into `out`; fewer only at the end of the file.
void read_up_to(int fd, size_t n, std::string& out) {
  const size_t start = out.size();
  out.resize(start + n);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, out.data() + start + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(std::string("read error: ") + std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(start + got);
}

// Closes the descriptor however the read ends.
struct Descriptor {
  int fd;
  ~Descriptor() { ::close(fd); }
};

// A file read no further than its header says: its data (and, for a regular file, its size) are checked
// against the shape before they are read, and a stream (a pipe, a device) is read only up to the bytes the
// header declares plus one, so that /dev/zero or a never-ending pipe costs no more than the declared array.
Array load_or_throw(int fd, bool regular, uint64_t file_size) {
  std::string head;
  read_up_to(fd, 12, head);
  const Prefix prefix = parse_prefix(head);
  const uint64_t after_prefix = regular ? file_size - std::min<uint64_t>(file_size, prefix.size) : 0;
  if (regular && prefix.header_length > after_prefix) fail_header_truncated(prefix.header_length, after_prefix);
  if (prefix.header_length > kMaxHeaderBytes)
    fail("the header claims " + std::to_string(prefix.header_length) + " bytes, more than the " +
         std::to_string(kMaxHeaderBytes) + " this reader accepts");
  std::string header = head.substr(prefix.size);
  if (header.size() < prefix.header_length) read_up_to(fd, prefix.header_length - header.size(), header);
  if (header.size() < prefix.header_length) fail_header_truncated(prefix.header_length, header.size());
  // 12 bytes may reach past a short header into the data.
  std::string data = header.substr(static_cast<size_t>(prefix.header_length));
  header.resize(static_cast<size_t>(prefix.header_length));
  Header h = parse_header(header);
  const auto size = static_cast<uint64_t>(h.type.size);
  if (regular) check_data_size(h, after_prefix - prefix.header_length);
  if (h.count > std::numeric_limits<uint64_t>::max() / size) fail("the shape's byte count does not fit in 64 bits");
  const uint64_t needed = h.count * size;
  // Chunks of whole elements, decoded as they arrive: memory grows only with data actually read.
  constexpr uint64_t kChunk = uint64_t(1) << 20;
  if (regular) h.array.values.reserve(static_cast<size_t>(h.count));
  uint64_t done = 0;
  while (true) {
    const uint64_t whole = data.size() / size * size;
    decode(reinterpret_cast<const unsigned char*>(data.data()), static_cast<size_t>(whole / size), h.type, h.array);
    data.erase(0, static_cast<size_t>(whole));
    done += whole;
    if (done >= needed) break;
    const size_t before = data.size();
    read_up_to(fd, static_cast<size_t>(std::min(kChunk, needed - done - before)), data);
    if (data.size() == before) check_data_size(h, done + data.size());  // the stream ended early: truncated
  }
  // Exactly the declared bytes, unless more follow.
  read_up_to(fd, 1, data);
  if (!data.empty()) check_data_size(h, needed, true);
  return std::move(h.array);
}

// Runs one of the throwing parsers and turns its failure into Parsed::error.
template <typename Parse>
Parsed guarded(const Parse& parse_or_throw) {
  Parsed result;
  try {
    result.array = parse_or_throw();
  } catch (const Malformed& e) {
    result.error = e.what();
  }
  return result;
}

}  // namespace

Parsed parse(std::string_view bytes) {
  return guarded([&] { return parse_or_throw(bytes); });
}

Parsed decode(std::string descr, std::vector<int64_t> shape, std::string_view data) {
  return guarded([&] { return decode_or_throw(std::move(descr), std::move(shape), data); });
}

std::string printable(std::string_view text) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out;
}

std::string quoted(std::string_view name) {
  std::string s(1, '\'');
  s += printable(name);
  s += '\'';
  return s;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) {
    if (!s.empty()) s += ", ";
    s += npy::quoted(n);
  }
  return s;
}

Parsed load(const std::string& path) {
  Parsed result;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    result.error = std::string("cannot open: ") + std::strerror(errno);
    return result;
  }
  const Descriptor closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    result.error = std::string("cannot read: ") + std::strerror(errno);
    return result;
  }
  if (S_ISDIR(st.st_mode)) {
    result.error = "is a folder, not a file";
    return result;
  }
  try {
    result.array = load_or_throw(fd, S_ISREG(st.st_mode), static_cast<uint64_t>(st.st_size));
  } catch (const Malformed& e) {
    result.error = e.what();
  } catch (const std::bad_alloc&) {
    result.error = "out of memory while reading the array its header declares";
  }
  return result;
}

std::string serialize_f32(const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
    count *= shape[i];
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // numpy pads with spaces and a final newline so that the data start on a 64-byte boundary.
  const size_t unpadded = kMagic.size() + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';

  std::string out(kMagic);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(count) * sizeof(float));
  return out;
}

std::string write_file_atomic(const std::string& path, std::string_view bytes) {
  Output out(path);
  return out.commit(bytes);
}

}  // namespace mra::npy
