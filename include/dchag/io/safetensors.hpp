#ifndef DCHAG_IO_SAFETENSORS_HPP
#define DCHAG_IO_SAFETENSORS_HPP

// Reading and writing the safetensors format (https://github.com/huggingface/safetensors), the
// plain file that moves weights between this library and PyTorch:
//
//   8 bytes   N, little-endian u64
//   N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//                    ..., "__metadata__": {"<key>": "<value>", ...}}   (may end in spaces)
//   the rest  raw little-endian tensor data; offsets are relative to its start
//
// Host-side only: device views are staged through host copies by the caller (the checkpoint
// layer). Nothing here depends on Kokkos or MPI.
//
// Reading is strict, as the reference implementation is: the header must be valid UTF-8 JSON
// of exactly this shape (objects, arrays, strings, non-negative integers; our own small parser,
// so no new dependency), names unique, every dtype known, every tensor's byte range exactly the
// size its shape and dtype need, and the ranges must tile the data section: no overlap, no gap,
// nothing before, between or after them. A file that breaks any rule is refused with a
// dchag::Error naming the file, the tensor and the rule, before any tensor is read. Values are
// read as F32, F64, F16 or BF16 and converted to the scalar asked for; the other dtypes of the
// format (integers, bool, 8-bit floats) are understood for validation but cannot be read as
// floating point.
//
// What reading a header costs is bounded by the header's size (see SafetensorsHeaderParser).
// When the metadata holds the checksums our writer records ("dchag.fnv1a64"), reading a tensor
// verifies its bytes; files of other writers have none and are read as they are.
//
// Writing produces F32 or F64 tensors, the header padded with spaces so that the data start on
// an 8-byte boundary (as the reference writer does), with a checksum of every tensor, through a
// temporary file in the same directory that is renamed over the target only once complete: a
// crash or a full disk never leaves a truncated file under the final name, and what a killed
// writer left behind is found by remove_stale_temporaries.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <atomic>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <unistd.h>
#endif

#include <dchag/core/error.hpp>
#include <dchag/core/hash.hpp>

namespace dchag {

// One tensor as the header describes it.
struct SafetensorsInfo {
  std::string name;
  std::string dtype;                // as in the file: "F32", "F64", "F16", "BF16", "I64", ...
  std::vector<std::size_t> shape;   // [] is a scalar (one element)
  std::uint64_t begin = 0, end = 0; // byte range in the data section
  // FNV-1a 64 of the tensor's bytes as stored, when the file records it (SafetensorsWriter
  // does, under the metadata key "dchag.fnv1a64"); reading the tensor verifies it.
  std::uint64_t checksum = 0;
  bool has_checksum = false;

  std::size_t elements() const {
    std::size_t n = 1;
    for (auto e : shape) n *= e;
    return n;
  }
};

namespace Impl {

// The header may not exceed this (the reference implementation's limit): a corrupt length
// must not make us allocate gigabytes before finding out.
constexpr std::uint64_t safetensors_max_header = 100000000;

// Metadata key of the per-tensor checksums: 16 lowercase hex digits of FNV-1a 64 per tensor, in
// header order, separated by commas. A flipped bit in the data is then refused on reading
// instead of loading silently; other readers see one more metadata string.
constexpr const char* safetensors_checksum_key = "dchag.fnv1a64";

inline std::string hex16(std::uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
  return s;
}

// Bytes per element of every dtype the format defines (0: not a known dtype).
inline std::size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, std::size_t> sizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  for (const auto& s : sizes)
    if (dtype == s.first) return s.second;
  return 0;
}

inline bool safetensors_readable(const std::string& dtype) {
  return dtype == "F32" || dtype == "F64" || dtype == "F16" || dtype == "BF16";
}

template <class T>
constexpr const char* safetensors_dtype_of() {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "dchag safetensors: tensors are written as float (F32) or double (F64)");
  return std::is_same<T, float>::value ? "F32" : "F64";
}

inline std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline bool host_is_little_endian() {
  const std::uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

template <class U>
U load_le(const unsigned char* p) {
  U v = 0;
  for (std::size_t i = sizeof(U); i-- > 0;) v = static_cast<U>((v << 8) | p[i]);
  return v;
}

template <class U>
void store_le(U v, unsigned char* p) {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// IEEE half -> float, exactly (every half is a float), subnormals, infinities and NaN included.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: mantissa * 2^-24, renormalised for the wider exponent
      std::uint32_t shifts = 0;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        ++shifts;
      }
      bits = sign | ((113u - shifts) << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// bfloat16 is the upper half of a float.
inline float bfloat16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Little-endian element i of `raw` (dtype one of the readable four) as T.
template <class T>
T decode_element(const std::string& dtype, const unsigned char* raw, std::size_t i) {
  if (dtype == "F32") {
    const std::uint32_t bits = load_le<std::uint32_t>(raw + 4 * i);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return static_cast<T>(f);
  }
  if (dtype == "F64") {
    const std::uint64_t bits = load_le<std::uint64_t>(raw + 8 * i);
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return static_cast<T>(d);
  }
  const std::uint16_t bits = load_le<std::uint16_t>(raw + 2 * i);
  return static_cast<T>(dtype == "F16" ? half_to_float(bits) : bfloat16_to_float(bits));
}

// Length of the UTF-8 sequence at p (a byte >= 0x80), or 0 when it is not valid UTF-8: no
// overlong forms, no surrogates, nothing past U+10FFFF (what serde_json, and so the reference
// implementation, accepts).
inline std::size_t utf8_sequence_length(const char* p, const char* end) {
  const unsigned char c0 = static_cast<unsigned char>(*p);
  std::size_t n;
  unsigned cp;
  if (c0 >= 0xc2 && c0 <= 0xdf) n = 1, cp = c0 & 0x1fu;
  else if (c0 >= 0xe0 && c0 <= 0xef) n = 2, cp = c0 & 0x0fu;
  else if (c0 >= 0xf0 && c0 <= 0xf4) n = 3, cp = c0 & 0x07u;
  else return 0;
  if (static_cast<std::size_t>(end - p) <= n) return 0;
  for (std::size_t i = 1; i <= n; ++i) {
    const unsigned char c = static_cast<unsigned char>(p[i]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3fu);
  }
  if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n + 1;
}

inline bool valid_utf8(const std::string& s) {
  const char* p = s.data();
  const char* end = p + s.size();
  while (p != end) {
    if (static_cast<unsigned char>(*p) < 0x80) {
      ++p;
      continue;
    }
    const std::size_t n = utf8_sequence_length(p, end);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

// ---- the header ---------------------------------------------------------------------------------

// What a header may cost is bounded by its size. It is parsed in one pass straight into the
// tensor list and the metadata, without a document tree (whose nodes cost ~100 bytes per JSON
// value: a 100 MB header holding a shape of 50 M ones took gigabytes); a shape has at most
// safetensors_max_rank dimensions; nothing nests deeper than the format does (header ->
// entry -> array), so no input makes the parser recurse. Memory is then a small multiple of
// the header's bytes and time is linear in them.
constexpr std::size_t safetensors_max_rank = 64;

// Strict JSON (RFC 8259) in the shape of a safetensors header: an object whose members are
// tensor entries {"dtype": string, "shape": [integers], "data_offsets": [integer, integer]} and
// at most one "__metadata__" object of strings; no true/false/null, fractions or exponents.
// Syntax errors say "invalid JSON header at byte N"; a value of the wrong kind names the tensor
// and the field.
class SafetensorsHeaderParser {
 public:
  SafetensorsHeaderParser(const char* begin, const char* end, std::string where)
      : begin_(begin), p_(begin), end_(end), where_(std::move(where)) {}

  // Entries in header order, as written (the caller checks them against the data).
  void parse(std::vector<SafetensorsInfo>& tensors, std::map<std::string, std::string>& metadata) {
    skip_space();
    if (p_ == end_) fail("the header is empty");
    if (*p_ != '{') refuse("the header is ", kind_here(), ", not a JSON object");
    ++p_;
    std::set<std::string> names;
    if (at('}')) {
      ++p_;
    } else {
      do {
        std::string key = parse_key();
        if (!names.insert(key).second) fail(concat("duplicate tensor name '", key, "'"));
        expect(':', "after an object key");
        if (key == "__metadata__") parse_metadata(metadata);
        else tensors.push_back(parse_entry(std::move(key)));
      } while (next_member());
    }
    skip_space();  // the reference writer pads the header with spaces
    if (p_ != end_) fail("unexpected text after the JSON object");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(concat(where_, ": invalid JSON header at byte ", p_ - begin_, ": ", what));
  }

  template <class... Args>
  [[noreturn]] void refuse(const Args&... what) const {
    throw Error(concat(where_, ": ", what...));
  }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool at(char c) {
    skip_space();
    return p_ != end_ && *p_ == c;
  }

  void expect(char c, const char* context) {
    skip_space();
    if (p_ == end_) fail(concat("the header ends where '", c, "' ", context, " was expected"));
    if (*p_ != c) fail(concat("expected '", c, "' ", context, ", found ", describe_here()));
    ++p_;
  }

  std::string describe_here() const {
    if (p_ == end_) return "the end of the header";
    const unsigned char c = static_cast<unsigned char>(*p_);
    if (c >= 0x20 && c < 0x7f) return concat("'", char(c), "'");
    return concat("byte 0x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
  }

  // The kind of the value that starts here, for messages. Text that starts no value a header
  // can hold is a syntax error.
  const char* kind_here() {
    skip_space();
    if (p_ == end_) fail("the header ends where a value was expected");
    const char c = *p_;
    if (c == '{') return "an object";
    if (c == '[') return "an array";
    if (c == '"') return "a string";
    if (c == '-' || (c >= '0' && c <= '9')) return "an integer";
    fail(concat("expected a value, found ", describe_here(),
                " (a safetensors header holds only objects, arrays, strings and integers)"));
  }

  // After an object member: true at ',' (another member follows), false at the closing '}'.
  bool next_member() {
    if (at(',')) {
      ++p_;
      return true;
    }
    expect('}', "or ',' in an object");
    return false;
  }

  std::string parse_key() {
    if (!at('"')) fail(concat("expected a string key in an object, found ", describe_here()));
    return parse_string();
  }

  void parse_metadata(std::map<std::string, std::string>& metadata) {
    if (!at('{')) refuse("\"__metadata__\" is ", kind_here(), ", not an object of strings");
    ++p_;
    if (at('}')) {
      ++p_;
      return;
    }
    do {
      std::string key = parse_key();
      if (metadata.count(key)) fail(concat("duplicate key '", key, "'"));
      expect(':', "after an object key");
      if (!at('"')) refuse("metadata entry '", key, "' is ", kind_here(), ", not a string");
      std::string value = parse_string();
      metadata.emplace(std::move(key), std::move(value));
    } while (next_member());
  }

  SafetensorsInfo parse_entry(std::string name) {
    SafetensorsInfo t;
    t.name = std::move(name);
    const std::string& n = t.name;
    if (!at('{'))
      refuse("tensor '", n, "' is described by ", kind_here(),
             ", not an object with dtype, shape and data_offsets");
    ++p_;
    bool dtype = false, shape = false, offsets = false;
    if (at('}')) {
      ++p_;
    } else {
      do {
        const std::string key = parse_key();
        bool* seen = key == "dtype" ? &dtype : key == "shape" ? &shape
                   : key == "data_offsets" ? &offsets : nullptr;
        if (!seen)
          refuse("tensor '", n, "' has an unknown field '", key,
                 "' (expected dtype, shape and data_offsets)");
        if (*seen) fail(concat("duplicate key '", key, "'"));
        *seen = true;
        expect(':', "after an object key");
        if (seen == &dtype) {
          if (!at('"')) refuse("tensor '", n, "': dtype is ", kind_here(), ", not a string");
          t.dtype = parse_string();
        } else if (seen == &shape) {
          if (!at('[')) refuse("tensor '", n, "': shape is ", kind_here(), ", not an array");
          const auto dims = parse_integers(n, "shape entries", safetensors_max_rank,
                                           "shape has more dimensions than the 64 allowed");
          for (auto d : dims) {
            if (d > std::numeric_limits<std::size_t>::max())
              refuse("tensor '", n, "': shape entry ", d, " is too large");
            t.shape.push_back(static_cast<std::size_t>(d));
          }
        } else {
          const char* form = "data_offsets must be an array [begin, end]";
          if (!at('[')) refuse("tensor '", n, "': ", form);
          const auto range = parse_integers(n, "data_offsets", 2, form);
          if (range.size() != 2) refuse("tensor '", n, "': ", form);
          t.begin = range[0];
          t.end = range[1];
        }
      } while (next_member());
    }
    if (!dtype || !shape || !offsets)
      refuse("tensor '", n, "' lacks ",
             !dtype ? "\"dtype\"" : !shape ? "\"shape\"" : "\"data_offsets\"");
    return t;
  }

  // An array of at most `most` non-negative integers (at '[').
  std::vector<std::uint64_t> parse_integers(const std::string& n, const char* what,
                                            std::size_t most, const char* too_many) {
    ++p_;  // '['
    std::vector<std::uint64_t> out;
    if (at(']')) {
      ++p_;
      return out;
    }
    for (;;) {
      const char* kind = kind_here();
      if (*p_ != '-' && (*p_ < '0' || *p_ > '9'))
        refuse("tensor '", n, "': ", what, " must be non-negative integers, found ", kind);
      bool negative = false;
      const std::uint64_t v = parse_integer(negative);
      if (negative)
        refuse("tensor '", n, "': ", what, " must be non-negative integers, found a negative "
               "integer");
      if (out.size() == most) refuse("tensor '", n, "': ", too_many);
      out.push_back(v);
      if (at(',')) {
        ++p_;
        continue;
      }
      expect(']', "or ',' in an array");
      return out;
    }
  }

  std::uint64_t parse_integer(bool& negative) {
    negative = false;
    if (*p_ == '-') {
      negative = true;
      ++p_;
    }
    if (p_ == end_ || *p_ < '0' || *p_ > '9') fail("expected digits after '-'");
    if (*p_ == '0' && p_ + 1 != end_ && p_[1] >= '0' && p_[1] <= '9')
      fail("numbers must not have leading zeros");
    std::uint64_t n = 0;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
      const std::uint64_t digit = std::uint64_t(*p_ - '0');
      if (n > (std::numeric_limits<std::uint64_t>::max() - digit) / 10)
        fail("integer too large for 64 bits");
      n = n * 10 + digit;
      ++p_;
    }
    if (p_ != end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E'))
      fail("only integers may appear in a safetensors header (no fractions or exponents)");
    return n;
  }

  unsigned hex4() {
    if (end_ - p_ < 4) fail("\\u escape needs four hex digits");
    unsigned u = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      u <<= 4;
      if (c >= '0' && c <= '9') u |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') u |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') u |= unsigned(c - 'A' + 10);
      else fail("\\u escape needs four hex digits");
    }
    return u;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  void copy_utf8(std::string& out) {
    const std::size_t n = utf8_sequence_length(p_, end_);
    if (n == 0) fail("invalid UTF-8 in a string");
    out.append(p_, n);
    p_ += n;
  }

  std::string parse_string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ == end_) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return out;
      }
      if (c < 0x20) fail("control character in a string (must be escaped)");
      if (c >= 0x80) {
        copy_utf8(out);
        continue;
      }
      if (c != '\\') {
        out += char(c);
        ++p_;
        continue;
      }
      ++p_;
      if (p_ == end_) fail("unterminated escape in a string");
      const char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xdc00 && cp <= 0xdfff) fail("lone low surrogate in a \\u escape");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
              fail("high surrogate not followed by a low surrogate");
            p_ += 2;
            const unsigned low = hex4();
            if (low < 0xdc00 || low > 0xdfff)
              fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --p_;
          fail(concat("unknown escape '\\", e, "' in a string"));
      }
    }
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  std::string where_;
};

// This host's name as it may appear in a file name (only [A-Za-z0-9-], anything else as '-'),
// "host" when unknown; and this process's id (0 when unknown).
inline std::string host_name() {
  std::string name;
#if defined(__unix__) || defined(__APPLE__)
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) == 0) name = buffer;
#endif
  for (char& c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      c = '-';
  return name.empty() ? "host" : name;
}

inline long process_id() {
#if defined(__unix__) || defined(__APPLE__)
  return static_cast<long>(::getpid());
#else
  return 0;
#endif
}

// Is process `pid` of this host alive? Unknown counts as alive (nothing is removed then).
inline bool process_alive(long pid) {
#if defined(__unix__) || defined(__APPLE__)
  if (pid <= 0) return true;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
#else
  (void)pid;
  return true;
#endif
}

inline bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The writer's pid if `file` is a temporary SafetensorsWriter made on this host:
// "<name>.safetensors.tmp.<host>.<pid>.<n>" (or "<name>.safetensors.tmp.<pid>.<n>" of earlier
// versions, which did not record the host); -1 otherwise.
inline long temporary_writer(const std::string& file, const std::string& host) {
  const std::size_t at = file.rfind(".safetensors.tmp.");
  if (at == std::string::npos || at == 0) return -1;
  std::vector<std::string> fields;
  std::string rest = file.substr(at + std::string(".safetensors.tmp.").size());
  for (std::size_t dot; (dot = rest.rfind('.')) != std::string::npos && fields.size() < 2;) {
    fields.push_back(rest.substr(dot + 1));
    rest.resize(dot);
  }
  // fields = {n, pid} with the host left in rest, or {n} with the pid in rest.
  if (fields.size() == 2 && rest == host && all_digits(fields[0]) && all_digits(fields[1]) &&
      fields[1].size() < 10)
    return std::stol(fields[1]);
  if (fields.size() == 1 && all_digits(fields[0]) && all_digits(rest) && rest.size() < 10)
    return std::stol(rest);
  return -1;
}

}  // namespace Impl

// Removes the temporary files that SafetensorsWriters of processes that no longer run (killed
// during a save) left in `directory`, and returns their paths. Only files whose name says they
// were made on this host by a process that is not alive are touched: a save in progress,
// another node's, and every other file are left alone. A missing directory holds none.
inline std::vector<std::string> remove_stale_temporaries(const std::string& directory) {
  std::vector<std::string> removed;
  std::error_code ec;
  std::filesystem::directory_iterator it(directory, ec), end;
  if (ec) return removed;
  const std::string host = Impl::host_name();
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    std::error_code type_error;
    if (!it->is_regular_file(type_error)) continue;
    const std::string name = it->path().filename().string();
    const long pid = Impl::temporary_writer(name, host);
    if (pid < 0 || Impl::process_alive(pid)) continue;
    std::error_code remove_error;
    if (std::filesystem::remove(it->path(), remove_error)) removed.push_back(it->path().string());
  }
  return removed;
}

namespace Impl {

// JSON text of a string, escaped for the header. Text that is not valid UTF-8 is refused: every
// safetensors reader, this one included, would refuse the file.
inline std::string json_quote(const std::string& s, const std::string& what) {
  require(valid_utf8(s), what, " is not valid UTF-8");
  std::string out = "\"";
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (u < 0x20) {
      static const char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Where the bytes of a safetensors file come from: the file itself (kept open) or memory.
class SafetensorsSource {
 public:
  static std::shared_ptr<SafetensorsSource> open_file(const std::string& path) {
    auto s = std::make_shared<SafetensorsSource>();
    s->label_ = "safetensors file '" + path + "'";
    // Opening a FIFO would block until someone writes to it, and a directory or a device has
    // no meaningful size: only regular files (or links to them) are read.
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
      throw Error(concat(s->label_, ": is not a regular file (",
                         std::filesystem::is_directory(status) ? "a directory" : "a FIFO, socket or device",
                         ")"));
    s->file_ = std::make_shared<std::ifstream>(path, std::ios::binary);
    if (!*s->file_)
      throw Error(concat(s->label_, ": cannot open it for reading (", std::strerror(errno), ")"));
    s->file_->seekg(0, std::ios::end);
    const std::streamoff size = s->file_->tellg();
    if (size < 0) throw Error(concat(s->label_, ": cannot determine its size"));
    s->size_ = static_cast<std::uint64_t>(size);
    return s;
  }

  static std::shared_ptr<SafetensorsSource> from_bytes(std::string bytes, std::string label) {
    auto s = std::make_shared<SafetensorsSource>();
    s->label_ = std::move(label);
    s->memory_ = std::make_shared<const std::string>(std::move(bytes));
    s->size_ = s->memory_->size();
    return s;
  }

  // Bytes [offset, offset + n) into out; the caller has checked the range against size().
  void read(std::uint64_t offset, std::size_t n, unsigned char* out, const std::string& what) const {
    if (n == 0) return;
    if (memory_) {
      std::memcpy(out, memory_->data() + offset, n);
      return;
    }
    file_->clear();
    file_->seekg(static_cast<std::streamoff>(offset));
    file_->read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
    if (!*file_ || file_->gcount() != static_cast<std::streamsize>(n))
      throw Error(concat(label_, ": reading ", what, " failed at byte ", offset,
                         " (the file was shortened or cannot be read)"));
  }

  std::uint64_t size() const { return size_; }
  const std::string& label() const { return label_; }

 private:
  std::string label_;
  std::uint64_t size_ = 0;
  std::shared_ptr<std::ifstream> file_;
  std::shared_ptr<const std::string> memory_;
};

}  // namespace Impl

// A safetensors file whose header has been read and validated. Tensors are read on demand
// (the file stays open; copies share it and are not safe to use from several threads at once).
class SafetensorsFile {
 public:
  // Opens and validates `path`; throws dchag::Error naming the file and what is wrong.
  static SafetensorsFile read(const std::string& path) {
    return SafetensorsFile(Impl::SafetensorsSource::open_file(path));
  }

  // The same from bytes in memory; `label` names them in error messages.
  static SafetensorsFile from_bytes(std::string bytes, std::string label = "safetensors buffer") {
    return SafetensorsFile(Impl::SafetensorsSource::from_bytes(std::move(bytes), std::move(label)));
  }

  // Tensor names in the order of their data in the file.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& t : tensors_) out.push_back(t.name);
    return out;
  }
  const std::vector<SafetensorsInfo>& tensors() const { return tensors_; }
  std::size_t size() const { return tensors_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  const SafetensorsInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    Impl::require(it != index_.end(), label(), ": no tensor '", name, "' (the file holds ",
                  tensors_.size(), " tensors)");
    return tensors_[it->second];
  }

  // The string-to-string "__metadata__" of the header (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads tensor `name` into out[0, count), converted to T; count must be its element count.
  template <class T>
  void read(const std::string& name, T* out, std::size_t count) const {
    static_assert(std::is_floating_point<T>::value,
                  "dchag::SafetensorsFile::read converts to a floating-point scalar");
    const SafetensorsInfo& t = info(name);
    Impl::require(Impl::safetensors_readable(t.dtype), label(), ": tensor '", name,
                  "' has dtype ", t.dtype, ", which cannot be read as floating point (F32, F64, "
                  "F16 and BF16 can)");
    Impl::require(count == t.elements(), label(), ": tensor '", name, "' has shape ",
                  Impl::shape_text(t.shape), " = ", t.elements(), " values, but room for ",
                  count, " was given");
    const std::size_t width = Impl::safetensors_dtype_size(t.dtype);
    const std::uint64_t start = data_offset_ + t.begin;
    const bool direct = Impl::host_is_little_endian() &&
                        ((t.dtype == "F32" && std::is_same<T, float>::value) ||
                         (t.dtype == "F64" && std::is_same<T, double>::value));
    Impl::Fnv1a hash;
    if (direct) {
      source_->read(start, count * width, reinterpret_cast<unsigned char*>(out),
                    "tensor '" + name + "'");
      if (t.has_checksum) hash.update(out, count * width);
    } else {
      // Converted in chunks: a large tensor never needs a second full-size buffer.
      constexpr std::size_t chunk = std::size_t(1) << 16;
      std::vector<unsigned char> raw(std::min(count, chunk) * width);
      for (std::size_t done = 0; done < count;) {
        const std::size_t n = std::min(chunk, count - done);
        source_->read(start + done * width, n * width, raw.data(), "tensor '" + name + "'");
        if (t.has_checksum) hash.update(raw.data(), n * width);
        for (std::size_t i = 0; i < n; ++i)
          out[done + i] = Impl::decode_element<T>(t.dtype, raw.data(), i);
        done += n;
      }
    }
    Impl::require(!t.has_checksum || hash.value() == t.checksum, label(), ": tensor '", name,
                  "' fails its checksum (its bytes hash to ", Impl::hex16(hash.value()),
                  ", the header records ", Impl::hex16(t.checksum),
                  "): the file is corrupt or was changed after it was written");
  }

  template <class T>
  std::vector<T> read(const std::string& name) const {
    std::vector<T> out(info(name).elements());
    read(name, out.data(), out.size());
    return out;
  }

  // "safetensors file '<path>'" (or the label given to from_bytes).
  const std::string& label() const { return source_->label(); }

 private:
  explicit SafetensorsFile(std::shared_ptr<Impl::SafetensorsSource> source)
      : source_(std::move(source)) {
    const std::uint64_t size = source_->size();
    Impl::require(size >= 8, label(), ": the file is ", size,
                  " bytes, shorter than the 8-byte header length that starts every safetensors "
                  "file");
    unsigned char head[8];
    source_->read(0, 8, head, "the header length");
    const std::uint64_t n = Impl::load_le<std::uint64_t>(head);
    Impl::require(n <= Impl::safetensors_max_header, label(), ": header length ", n,
                  " bytes is absurdly large (limit ", Impl::safetensors_max_header,
                  "); not a safetensors file, or a corrupt one");
    Impl::require(n <= size - 8, label(), ": header length ", n,
                  " bytes runs past the end of the file (", size, " bytes)");
    std::string header(static_cast<std::size_t>(n), '\0');
    source_->read(8, header.size(), reinterpret_cast<unsigned char*>(&header[0]), "the header");
    data_offset_ = 8 + n;
    parse_header(header, size - data_offset_);
  }

  void parse_header(const std::string& header, std::uint64_t data_size) {
    Impl::SafetensorsHeaderParser(header.data(), header.data() + header.size(), label())
        .parse(tensors_, metadata_);
    for (auto& t : tensors_) check_entry(t, data_size);
    read_checksums();
    check_layout(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  // The dtype is known and the byte range holds exactly the shape, inside the data.
  void check_entry(SafetensorsInfo& t, std::uint64_t data_size) const {
    const std::string& name = t.name;
    const std::size_t width = Impl::safetensors_dtype_size(t.dtype);
    Impl::require(width > 0, label(), ": tensor '", name, "' has unknown dtype '", t.dtype, "'");
    // Element and byte counts in 64 bits with overflow checks: a corrupt shape must be refused,
    // not wrapped around into a small, plausible size.
    std::uint64_t elements = 1;
    bool overflow = false;
    for (const auto e : t.shape) {
      if (e != 0 && elements > std::numeric_limits<std::uint64_t>::max() / e) overflow = true;
      else elements *= e;
    }
    Impl::require(!overflow && elements <= std::numeric_limits<std::uint64_t>::max() / width &&
                      elements <= std::numeric_limits<std::size_t>::max(),
                  label(), ": tensor '", name, "': shape ", Impl::shape_text(t.shape),
                  " has more elements than can be addressed");
    Impl::require(t.begin <= t.end, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] end before they begin");
    const std::uint64_t bytes = elements * width;
    Impl::require(t.end - t.begin == bytes, label(), ": tensor '", name, "': shape ",
                  Impl::shape_text(t.shape), " of ", t.dtype, " needs ", bytes,
                  " bytes, but data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin);
    Impl::require(t.end <= data_size, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] run past the end of the data (", data_size, " bytes)");
  }

  // The checksums SafetensorsWriter records (one per tensor, in header order); files without
  // them (other writers) are read unchecked.
  void read_checksums() {
    const auto it = metadata_.find(Impl::safetensors_checksum_key);
    if (it == metadata_.end()) return;
    const std::string& text = it->second;
    const std::size_t n = tensors_.size();
    const bool sized = n == 0 ? text.empty() : text.size() == 17 * n - 1;
    Impl::require(sized, label(), ": metadata '", Impl::safetensors_checksum_key, "' holds ",
                  text.size(), " characters, not the ", n, " comma-separated 16-digit checksums "
                  "of its ", n, " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t h = 0;
      for (std::size_t k = 0; k < 16; ++k) {
        const char c = text[17 * i + k];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        Impl::require(digit >= 0, label(), ": metadata '", Impl::safetensors_checksum_key,
                      "' is not a list of hexadecimal checksums (character ", 17 * i + k, ")");
        h = (h << 4) | static_cast<std::uint64_t>(digit);
      }
      Impl::require(i + 1 == n || text[17 * i + 16] == ',', label(), ": metadata '",
                    Impl::safetensors_checksum_key, "' is not comma-separated");
      tensors_[i].checksum = h;
      tensors_[i].has_checksum = true;
    }
    // The writer's bookkeeping, not the user's metadata: copying metadata() into a new file
    // must not carry checksums of other bytes.
    metadata_.erase(it);
  }

  // The byte ranges must tile [0, data_size) exactly, as the format requires.
  void check_layout(std::uint64_t data_size) {
    std::stable_sort(tensors_.begin(), tensors_.end(),
                     [](const SafetensorsInfo& a, const SafetensorsInfo& b) {
                       return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                     });
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      Impl::require(t.begin >= covered, label(), ": tensor '", t.name, "': data_offsets [",
                    t.begin, ", ", t.end, "] overlap those of tensor '",
                    i > 0 ? tensors_[i - 1].name : std::string(), "'");
      Impl::require(t.begin == covered, label(), ": tensor '", t.name, "': data_offsets [",
                    t.begin, ", ", t.end, "] leave a gap: bytes [", covered, ", ", t.begin,
                    ") of the data belong to no tensor");
      covered = t.end;
    }
    Impl::require(covered == data_size, label(), ": the data section has ", data_size,
                  " bytes but the tensors cover only ", covered,
                  " (trailing bytes after the last tensor)");
  }

  std::shared_ptr<Impl::SafetensorsSource> source_;
  std::uint64_t data_offset_ = 0;
  std::vector<SafetensorsInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// What a tensor will be: declared up front, because the header (with every offset) comes first.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32" or "F64"
  std::vector<std::size_t> shape;
};

// Streams a safetensors file: the header at construction, then every tensor's data in the
// order of `entries` through write(), then commit() renames the finished file into place.
// Destroyed without commit() (an exception on the way), it removes its temporary file and the
// target is left as it was.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                    const std::map<std::string, std::string>& metadata = {})
      : path_(std::move(path)), entries_(std::move(entries)) {
    const std::string header = make_header(metadata);
    temp_ = temp_name();
    file_ = std::fopen(temp_.c_str(), "wb");
    Impl::require(file_ != nullptr, label(), ": cannot create the temporary file '", temp_,
                  "' (", std::strerror(errno), ")");
    // A constructor that throws runs no destructor: close and remove the temporary here (a full
    // disk would otherwise leave one behind at every attempt).
    try {
      unsigned char length[8];
      Impl::store_le<std::uint64_t>(header.size(), length);
      put(length, 8, "the header length");
      put(header.data(), header.size(), "the header");
    } catch (...) {
      discard();
      throw;
    }
  }

  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  ~SafetensorsWriter() {
    if (!committed_) discard();
  }

  // The next tensor's values (it must be `name`, the next entry): count of them, converted to
  // the entry's dtype.
  template <class T>
  void write(const std::string& name, const T* data, std::size_t count) {
    static_assert(std::is_floating_point<T>::value,
                  "dchag::SafetensorsWriter::write takes floating-point values");
    Impl::require(file_ != nullptr && !committed_, label(), ": write('", name,
                  "') after the file was committed or failed");
    Impl::require(next_ < entries_.size(), label(), ": write('", name, "') but all ",
                  entries_.size(), " declared tensors are already written");
    const SafetensorsEntry& e = entries_[next_];
    Impl::require(e.name == name, label(), ": tensor '", name, "' written where '", e.name,
                  "' was declared next");
    std::size_t expected = 1;
    for (auto d : e.shape) expected *= d;
    Impl::require(count == expected, label(), ": tensor '", name, "' has shape ",
                  Impl::shape_text(e.shape), " = ", expected, " values, but ", count,
                  " were given");
    Impl::Fnv1a hash;
    if (e.dtype == "F32") put_values<float>(data, count, name, hash);
    else put_values<double>(data, count, name, hash);
    checksums_ += (next_ ? "," : "") + Impl::hex16(hash.value());
    ++next_;
  }

  // Every declared tensor written: flush, sync and rename over the target.
  void commit() {
    Impl::require(file_ != nullptr && !committed_, label(), ": commit() twice or after a failure");
    Impl::require(next_ == entries_.size(), label(), ": commit() after ", next_, " of ",
                  entries_.size(), " tensors; '", next_ < entries_.size() ? entries_[next_].name : "",
                  "' and later were never written");
    int err = 0;
    // The checksums are known only now: they fill the placeholder the header left for them
    // (the same number of characters, so no offset moves).
    if (std::fseek(file_, static_cast<long>(8 + checksum_at_), SEEK_SET) != 0 ||
        std::fwrite(checksums_.data(), 1, checksums_.size(), file_) != checksums_.size())
      err = errno ? errno : EIO;
    if (err == 0 && std::fflush(file_) != 0) err = errno;
#if defined(__unix__) || defined(__APPLE__)
    // The data must be on disk before the rename makes the file visible under its real name.
    if (err == 0 && ::fsync(fileno(file_)) != 0) err = errno;
#endif
    if (std::fclose(file_) != 0 && err == 0) err = errno;
    file_ = nullptr;
    Impl::require(err == 0, label(), ": writing the temporary file '", temp_, "' failed (",
                  std::strerror(err), ")");
    Impl::require(std::rename(temp_.c_str(), path_.c_str()) == 0, label(),
                  ": cannot rename the temporary file '", temp_, "' to it (",
                  std::strerror(errno), ")");
    committed_ = true;
  }

  const std::string& path() const { return path_; }

 private:
  std::string label() const { return "safetensors file '" + path_ + "'"; }

  std::string make_header(const std::map<std::string, std::string>& metadata) {
    Impl::require(metadata.count(Impl::safetensors_checksum_key) == 0, label(),
                  ": metadata key '", Impl::safetensors_checksum_key,
                  "' is reserved for the checksums the writer records");
    std::string h = "{\"__metadata__\":{";
    for (const auto& kv : metadata)
      h += Impl::json_quote(kv.first, label() + ": metadata key") + ':' +
           Impl::json_quote(kv.second, label() + ": metadata '" + kv.first + "'") + ',';
    h += std::string("\"") + Impl::safetensors_checksum_key + "\":\"";
    checksum_at_ = h.size();
    for (std::size_t i = 0; i < entries_.size(); ++i) h += i ? ",0000000000000000" : "0000000000000000";
    h += "\"}";
    std::uint64_t offset = 0;
    std::vector<std::string> seen;
    for (const auto& e : entries_) {
      Impl::require(e.name != "__metadata__", label(), ": '__metadata__' cannot be a tensor name");
      Impl::require(e.dtype == "F32" || e.dtype == "F64", label(), ": tensor '", e.name,
                    "': dtype ", e.dtype, " cannot be written (F32 and F64 can)");
      seen.push_back(e.name);
      std::uint64_t n = Impl::safetensors_dtype_size(e.dtype);
      for (auto d : e.shape) {
        Impl::require(d == 0 || n <= std::numeric_limits<std::uint64_t>::max() / d, label(),
                      ": tensor '", e.name, "': shape ", Impl::shape_text(e.shape),
                      " is too large");
        n *= d;
      }
      if (h.size() > 1) h += ',';
      h += Impl::json_quote(e.name, label() + ": tensor name") + ":{\"dtype\":\"" + e.dtype +
           "\",\"shape\":[";
      for (std::size_t i = 0; i < e.shape.size(); ++i)
        h += (i ? "," : "") + std::to_string(e.shape[i]);
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) +
           "]}";
      offset += n;
    }
    std::sort(seen.begin(), seen.end());
    const auto dup = std::adjacent_find(seen.begin(), seen.end());
    Impl::require(dup == seen.end(), label(), ": duplicate tensor name '",
                  dup == seen.end() ? std::string() : *dup, "'");
    h += '}';
    // Data aligned to 8 bytes after the 8-byte length, as the reference writer pads.
    while (h.size() % 8 != 0) h += ' ';
    return h;
  }

  // ".tmp.<host>.<pid>.<n>": unique among the writers of one directory, also on a file system
  // that several nodes share, and enough for remove_stale_temporaries to tell whether the
  // writer is still alive.
  static std::string temp_name_suffix() {
    static std::atomic<int> counter{0};
    return Impl::concat(".tmp.", Impl::host_name(), ".", Impl::process_id(), ".", ++counter);
  }
  std::string temp_name() const { return path_ + temp_name_suffix(); }

  void discard() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!temp_.empty()) std::remove(temp_.c_str());
    temp_.clear();
  }

  void put(const void* data, std::size_t n, const char* what) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      const int err = errno;
      throw Error(Impl::concat(label(), ": writing ", what, " to the temporary file '", temp_,
                               "' failed (", std::strerror(err), ")"));
    }
  }

  template <class Stored, class T>
  void put_values(const T* data, std::size_t count, const std::string& name, Impl::Fnv1a& hash) {
    const std::string what = "tensor '" + name + "'";
    if (std::is_same<Stored, T>::value && Impl::host_is_little_endian()) {
      hash.update(data, count * sizeof(T));
      put(data, count * sizeof(T), what.c_str());
      return;
    }
    using Bits = std::conditional_t<sizeof(Stored) == 4, std::uint32_t, std::uint64_t>;
    constexpr std::size_t chunk = std::size_t(1) << 16;
    std::vector<unsigned char> raw(std::min(count, chunk) * sizeof(Stored));
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min(chunk, count - done);
      for (std::size_t i = 0; i < n; ++i) {
        const Stored v = static_cast<Stored>(data[done + i]);
        Bits bits;
        std::memcpy(&bits, &v, sizeof v);
        Impl::store_le<Bits>(bits, raw.data() + i * sizeof(Stored));
      }
      hash.update(raw.data(), n * sizeof(Stored));
      put(raw.data(), n * sizeof(Stored), what.c_str());
      done += n;
    }
  }

  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  std::size_t next_ = 0;
  std::size_t checksum_at_ = 0;  // where the checksums go, in the header
  std::string checksums_;        // of the tensors written so far
  bool committed_ = false;
};

// One tensor to write: `data` holds the product of `shape` values, row-major.
template <class T>
struct SafetensorsTensor {
  std::string name;
  std::vector<std::size_t> shape;
  const T* data = nullptr;
};

// Writes `tensors` (in this order) and `metadata` to `path` atomically, as F32 for float and
// F64 for double.
template <class T>
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor<T>>& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  std::vector<SafetensorsEntry> entries;
  entries.reserve(tensors.size());
  for (const auto& t : tensors)
    entries.push_back({t.name, Impl::safetensors_dtype_of<T>(), t.shape});
  SafetensorsWriter writer(path, std::move(entries), metadata);
  for (const auto& t : tensors) {
    std::size_t n = 1;
    for (auto d : t.shape) n *= d;
    Impl::require(t.data != nullptr || n == 0, "safetensors file '", path, "': tensor '", t.name,
                  "' has no data");
    writer.write(t.name, t.data, n);
  }
  writer.commit();
}

}  // namespace dchag

#endif
