// tools/mra-ref/inflate.cpp: the DEFLATE decoder declared in inflate.h. Canonical Huffman codes are decoded one
// bit at a time against the count of codes of each length: slower than table lookup, but short and with no
// table whose construction a hostile stream could confuse. Tested by tests/cli (zip_test.cpp), fuzzed (npz).
#include "inflate.h"

#include <array>
#include <stdexcept>

namespace mra::zip {
namespace {

struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr int kMaxBits = 15;  // the longest code DEFLATE allows

class BitReader {
 public:
  explicit BitReader(std::string_view in) : in_(in) {}

  // The next `n` (<= 16) bits, least significant first.
  uint32_t bits(int n) {
    while (count_ < n) {
      if (pos_ == in_.size()) throw Corrupt("the deflate stream ends early");
      buffer_ |= static_cast<uint32_t>(static_cast<unsigned char>(in_[pos_++])) << count_;
      count_ += 8;
    }
    const uint32_t v = buffer_ & ((1u << n) - 1);
    buffer_ >>= n;
    count_ -= n;
    return v;
  }

  // Stored blocks start on a byte boundary; the skipped bits are padding.
  void align() {
    buffer_ = 0;
    count_ = 0;
  }

  std::string_view take(size_t n) {
    if (n > in_.size() - pos_) throw Corrupt("a stored block runs past the end of the deflate stream");
    const std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  uint32_t buffer_ = 0;
  int count_ = 0;
};

// A canonical Huffman code: how many codes have each length, and the symbols in code order.
struct Huffman {
  std::array<uint16_t, kMaxBits + 1> count{};
  std::array<uint16_t, 288> symbol{};

  // Builds the code from each symbol's code length (0: unused). An over-subscribed set of lengths is malformed;
  // an incomplete one is allowed (a stream with a single distance code uses one) and fails only if a missing
  // code is read.
  Huffman(const uint8_t* lengths, int n) {
    for (int s = 0; s < n; ++s) ++count[lengths[s]];
    int left = 1;
    for (int len = 1; len <= kMaxBits; ++len) {
      left = 2 * left - count[len];
      if (left < 0) throw Corrupt("a Huffman code of the deflate stream is over-subscribed");
    }
    std::array<uint16_t, kMaxBits + 2> offset{};
    for (int len = 1; len <= kMaxBits; ++len) offset[len + 1] = static_cast<uint16_t>(offset[len] + count[len]);
    for (int s = 0; s < n; ++s)
      if (lengths[s]) symbol[offset[lengths[s]]++] = static_cast<uint16_t>(s);
  }

  int decode(BitReader& in) const {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= kMaxBits; ++len) {
      code |= static_cast<int>(in.bits(1));
      const int n = count[len];
      if (code - first < n) return symbol[index + code - first];
      index += n;
      first = (first + n) << 1;
      code <<= 1;
    }
    throw Corrupt("the deflate stream holds a code its Huffman table lacks");
  }
};

constexpr std::array<uint16_t, 29> kLengthBase{3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                               31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr std::array<uint8_t, 29> kLengthExtra{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                               2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr std::array<uint16_t, 30> kDistBase{1,   2,   3,   4,   5,   7,    9,    13,   17,   25,
                                             33,  49,  65,  97,  129, 193,  257,  385,  513,  769,
                                             1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr std::array<uint8_t, 30> kDistExtra{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                             6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

class Inflater {
 public:
  Inflater(std::string_view in, uint64_t max_out, std::string& out) : in_(in), max_out_(max_out), out_(out) {}

  void run() {
    bool last = false;
    while (!last) {
      last = in_.bits(1) != 0;
      const uint32_t type = in_.bits(2);
      if (type == 0)
        stored_block();
      else if (type == 1)
        fixed_block();
      else if (type == 2)
        dynamic_block();
      else
        throw Corrupt("the deflate stream has a block of reserved type 3");
    }
  }

 private:
  void room_for(uint64_t n) {
    if (n > max_out_ - out_.size()) throw Corrupt("the deflate stream inflates beyond the declared size");
  }

  void stored_block() {
    in_.align();
    const uint32_t len = in_.bits(16), nlen = in_.bits(16);
    if ((len ^ 0xffffu) != nlen) throw Corrupt("a stored block's length check fails");
    room_for(len);
    out_ += in_.take(len);
  }

  void fixed_block() {
    std::array<uint8_t, 288> lengths{};
    for (int s = 0; s < 288; ++s) lengths[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    std::array<uint8_t, 30> distances{};
    distances.fill(5);
    codes(Huffman(lengths.data(), 288), Huffman(distances.data(), 30));
  }

  void dynamic_block() {
    const int nlen = static_cast<int>(in_.bits(5)) + 257, ndist = static_cast<int>(in_.bits(5)) + 1;
    const int ncode = static_cast<int>(in_.bits(4)) + 4;
    if (nlen > 286 || ndist > 30) throw Corrupt("a dynamic block declares too many codes");
    static constexpr std::array<uint8_t, 19> kOrder{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    std::array<uint8_t, 19> code_lengths{};
    for (int i = 0; i < ncode; ++i) code_lengths[kOrder[i]] = static_cast<uint8_t>(in_.bits(3));
    const Huffman lengths_code(code_lengths.data(), 19);

    std::array<uint8_t, 286 + 30> lengths{};
    for (int i = 0; i < nlen + ndist;) {
      const int sym = lengths_code.decode(in_);
      if (sym < 16) {
        lengths[i++] = static_cast<uint8_t>(sym);
        continue;
      }
      uint8_t value = 0;
      int repeat = 0;
      if (sym == 16) {
        if (i == 0) throw Corrupt("a dynamic block repeats a code length before the first");
        value = lengths[i - 1];
        repeat = 3 + static_cast<int>(in_.bits(2));
      } else {
        repeat = sym == 17 ? 3 + static_cast<int>(in_.bits(3)) : 11 + static_cast<int>(in_.bits(7));
      }
      if (repeat > nlen + ndist - i) throw Corrupt("a dynamic block's code lengths overrun their count");
      for (; repeat > 0; --repeat) lengths[i++] = value;
    }
    if (lengths[256] == 0) throw Corrupt("a dynamic block has no end-of-block code");
    codes(Huffman(lengths.data(), nlen), Huffman(lengths.data() + nlen, ndist));
  }

  void codes(const Huffman& literal, const Huffman& distance) {
    while (true) {
      const int sym = literal.decode(in_);
      if (sym < 256) {
        room_for(1);
        out_ += static_cast<char>(sym);
        continue;
      }
      if (sym == 256) return;
      if (sym > 285) throw Corrupt("the deflate stream holds an invalid length code");
      const size_t l = static_cast<size_t>(sym - 257);
      const uint32_t length = kLengthBase[l] + in_.bits(kLengthExtra[l]);
      const int d = distance.decode(in_);
      if (d > 29) throw Corrupt("the deflate stream holds an invalid distance code");
      const uint32_t dist = kDistBase[static_cast<size_t>(d)] + in_.bits(kDistExtra[static_cast<size_t>(d)]);
      if (dist > out_.size()) throw Corrupt("the deflate stream refers back before its start");
      room_for(length);
      // Byte by byte: a copy may overlap the bytes it produces (distance < length repeats a pattern).
      for (size_t from = out_.size() - dist, end = from + length; from < end; ++from) out_ += out_[from];
    }
  }

  BitReader in_;
  uint64_t max_out_;
  std::string& out_;
};

}  // namespace

bool inflate(std::string_view in, uint64_t max_out, std::string& out, std::string& error) {
  out.clear();
  try {
    Inflater(in, max_out, out).run();
  } catch (const Corrupt& e) {
    error = e.what();
    return false;
  }
  return true;
}

}  // namespace mra::zip
