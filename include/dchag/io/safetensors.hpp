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
// Writing produces F32 or F64 tensors, the header padded with spaces so that the data start on
// an 8-byte boundary (as the reference writer does), through a temporary file in the same
// directory that is renamed over the target only once complete: a crash or a full disk never
// leaves a truncated file under the final name.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
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
#include <unistd.h>
#endif

#include <dchag/core/error.hpp>

namespace dchag {

// One tensor as the header describes it.
struct SafetensorsInfo {
  std::string name;
  std::string dtype;                // as in the file: "F32", "F64", "F16", "BF16", "I64", ...
  std::vector<std::size_t> shape;   // [] is a scalar (one element)
  std::uint64_t begin = 0, end = 0; // byte range in the data section

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

// ---- the JSON subset of a safetensors header --------------------------------------------------

struct JsonValue {
  enum class Kind { Object, Array, String, Integer };
  Kind kind = Kind::Object;
  std::string text;              // String
  std::uint64_t integer = 0;     // Integer (magnitude)
  bool negative = false;         // Integer
  std::vector<std::string> keys; // Object, in file order (unique)
  std::vector<JsonValue> items;  // Object values (parallel to keys) or Array items

  const char* kind_name() const {
    switch (kind) {
      case Kind::Object: return "an object";
      case Kind::Array: return "an array";
      case Kind::String: return "a string";
      default: return "an integer";
    }
  }
};

// Recursive descent over [begin, end). Strict JSON (RFC 8259) restricted to what a header
// holds: no true/false/null, no fractions or exponents. Nesting is bounded so that a hostile
// "[[[[..." cannot exhaust the stack.
class JsonParser {
 public:
  JsonParser(const char* begin, const char* end, std::string where)
      : begin_(begin), p_(begin), end_(end), where_(std::move(where)) {}

  JsonValue parse_document() {
    skip_space();
    if (p_ == end_) fail("the header is empty");
    JsonValue v = parse_value(0);
    skip_space();  // the reference writer pads the header with spaces
    if (p_ != end_) fail("unexpected text after the JSON object");
    return v;
  }

 private:
  static constexpr int max_depth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(concat(where_, ": invalid JSON header at byte ", p_ - begin_, ": ", what));
  }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
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

  JsonValue parse_value(int depth) {
    if (depth > max_depth) fail(concat("nesting deeper than ", max_depth, " levels"));
    skip_space();
    if (p_ == end_) fail("the header ends where a value was expected");
    const char c = *p_;
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') {
      JsonValue v;
      v.kind = JsonValue::Kind::String;
      v.text = parse_string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_integer();
    fail(concat("expected a value, found ", describe_here(),
                " (a safetensors header holds only objects, arrays, strings and integers)"));
  }

  JsonValue parse_object(int depth) {
    JsonValue v;
    v.kind = JsonValue::Kind::Object;
    std::set<std::string> seen;
    ++p_;  // '{'
    skip_space();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return v;
    }
    for (;;) {
      skip_space();
      if (p_ == end_ || *p_ != '"')
        fail(concat("expected a string key in an object, found ", describe_here()));
      std::string key = parse_string();
      if (!seen.insert(key).second)
        fail(depth == 0 ? concat("duplicate tensor name '", key, "'")
                        : concat("duplicate key '", key, "'"));
      expect(':', "after an object key");
      v.keys.push_back(std::move(key));
      v.items.push_back(parse_value(depth + 1));
      skip_space();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      expect('}', "or ',' in an object");
      return v;
    }
  }

  JsonValue parse_array(int depth) {
    JsonValue v;
    v.kind = JsonValue::Kind::Array;
    ++p_;  // '['
    skip_space();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return v;
    }
    for (;;) {
      v.items.push_back(parse_value(depth + 1));
      skip_space();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      expect(']', "or ',' in an array");
      return v;
    }
  }

  JsonValue parse_integer() {
    JsonValue v;
    v.kind = JsonValue::Kind::Integer;
    if (*p_ == '-') {
      v.negative = true;
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
    v.integer = n;
    return v;
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
    if (direct) {
      source_->read(start, count * width, reinterpret_cast<unsigned char*>(out),
                    "tensor '" + name + "'");
      return;
    }
    // Converted in chunks: a large tensor never needs a second full-size buffer.
    constexpr std::size_t chunk = std::size_t(1) << 16;
    std::vector<unsigned char> raw(std::min(count, chunk) * width);
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min(chunk, count - done);
      source_->read(start + done * width, n * width, raw.data(), "tensor '" + name + "'");
      for (std::size_t i = 0; i < n; ++i)
        out[done + i] = Impl::decode_element<T>(t.dtype, raw.data(), i);
      done += n;
    }
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
    const Impl::JsonValue root =
        Impl::JsonParser(header.data(), header.data() + header.size(), label()).parse_document();
    Impl::require(root.kind == Impl::JsonValue::Kind::Object, label(),
                  ": the header is ", root.kind_name(), ", not a JSON object");
    for (std::size_t i = 0; i < root.keys.size(); ++i) {
      if (root.keys[i] == "__metadata__")
        read_metadata(root.items[i]);
      else
        tensors_.push_back(read_entry(root.keys[i], root.items[i], data_size));
    }
    check_layout(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  void read_metadata(const Impl::JsonValue& v) {
    Impl::require(v.kind == Impl::JsonValue::Kind::Object, label(),
                  ": \"__metadata__\" is ", v.kind_name(), ", not an object of strings");
    for (std::size_t i = 0; i < v.keys.size(); ++i) {
      Impl::require(v.items[i].kind == Impl::JsonValue::Kind::String, label(),
                    ": metadata entry '", v.keys[i], "' is ", v.items[i].kind_name(),
                    ", not a string");
      metadata_[v.keys[i]] = v.items[i].text;
    }
  }

  std::uint64_t integer(const Impl::JsonValue& v, const std::string& name, const char* what) const {
    Impl::require(v.kind == Impl::JsonValue::Kind::Integer && !v.negative, label(), ": tensor '",
                  name, "': ", what, " must be non-negative integers, found ",
                  v.kind == Impl::JsonValue::Kind::Integer ? "a negative integer" : v.kind_name());
    return v.integer;
  }

  SafetensorsInfo read_entry(const std::string& name, const Impl::JsonValue& v,
                             std::uint64_t data_size) const {
    using Kind = Impl::JsonValue::Kind;
    Impl::require(v.kind == Kind::Object, label(), ": tensor '", name, "' is described by ",
                  v.kind_name(), ", not an object with dtype, shape and data_offsets");
    const Impl::JsonValue *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (std::size_t i = 0; i < v.keys.size(); ++i) {
      const std::string& k = v.keys[i];
      if (k == "dtype") dtype = &v.items[i];
      else if (k == "shape") shape = &v.items[i];
      else if (k == "data_offsets") offsets = &v.items[i];
      else
        throw Error(Impl::concat(label(), ": tensor '", name, "' has an unknown field '", k,
                                 "' (expected dtype, shape and data_offsets)"));
    }
    Impl::require(dtype && shape && offsets, label(), ": tensor '", name, "' lacks ",
                  !dtype ? "\"dtype\"" : !shape ? "\"shape\"" : "\"data_offsets\"");
    SafetensorsInfo t;
    t.name = name;
    Impl::require(dtype->kind == Kind::String, label(), ": tensor '", name, "': dtype is ",
                  dtype->kind_name(), ", not a string");
    t.dtype = dtype->text;
    const std::size_t width = Impl::safetensors_dtype_size(t.dtype);
    Impl::require(width > 0, label(), ": tensor '", name, "' has unknown dtype '", t.dtype, "'");
    Impl::require(shape->kind == Kind::Array, label(), ": tensor '", name, "': shape is ",
                  shape->kind_name(), ", not an array");
    // Element and byte counts in 64 bits with overflow checks: a corrupt shape must be refused,
    // not wrapped around into a small, plausible size.
    std::uint64_t elements = 1;
    bool overflow = false;
    for (const auto& d : shape->items) {
      const std::uint64_t e = integer(d, name, "shape entries");
      Impl::require(e <= std::numeric_limits<std::size_t>::max(), label(), ": tensor '", name,
                    "': shape entry ", e, " is too large");
      t.shape.push_back(static_cast<std::size_t>(e));
      if (e != 0 && elements > std::numeric_limits<std::uint64_t>::max() / e) overflow = true;
      else elements *= e;
    }
    Impl::require(!overflow && elements <= std::numeric_limits<std::uint64_t>::max() / width &&
                      elements <= std::numeric_limits<std::size_t>::max(),
                  label(), ": tensor '", name, "': shape ", Impl::shape_text(t.shape),
                  " has more elements than can be addressed");
    Impl::require(offsets->kind == Kind::Array && offsets->items.size() == 2, label(),
                  ": tensor '", name, "': data_offsets must be an array [begin, end]");
    t.begin = integer(offsets->items[0], name, "data_offsets");
    t.end = integer(offsets->items[1], name, "data_offsets");
    Impl::require(t.begin <= t.end, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] end before they begin");
    const std::uint64_t bytes = elements * width;
    Impl::require(t.end - t.begin == bytes, label(), ": tensor '", name, "': shape ",
                  Impl::shape_text(t.shape), " of ", t.dtype, " needs ", bytes,
                  " bytes, but data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin);
    Impl::require(t.end <= data_size, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] run past the end of the data (", data_size, " bytes)");
    return t;
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
    unsigned char length[8];
    Impl::store_le<std::uint64_t>(header.size(), length);
    put(length, 8, "the header length");
    put(header.data(), header.size(), "the header");
  }

  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  ~SafetensorsWriter() {
    if (file_) std::fclose(file_);
    if (!committed_ && !temp_.empty()) std::remove(temp_.c_str());
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
    if (e.dtype == "F32") put_values<float>(data, count, name);
    else put_values<double>(data, count, name);
    ++next_;
  }

  // Every declared tensor written: flush, sync and rename over the target.
  void commit() {
    Impl::require(file_ != nullptr && !committed_, label(), ": commit() twice or after a failure");
    Impl::require(next_ == entries_.size(), label(), ": commit() after ", next_, " of ",
                  entries_.size(), " tensors; '", next_ < entries_.size() ? entries_[next_].name : "",
                  "' and later were never written");
    int err = 0;
    if (std::fflush(file_) != 0) err = errno;
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

  std::string make_header(const std::map<std::string, std::string>& metadata) const {
    std::string h = "{";
    if (!metadata.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& kv : metadata) {
        if (!first) h += ',';
        first = false;
        h += Impl::json_quote(kv.first, label() + ": metadata key") + ':' +
             Impl::json_quote(kv.second, label() + ": metadata '" + kv.first + "'");
      }
      h += '}';
    }
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

  static std::string temp_name_suffix() {
    static std::atomic<int> counter{0};
    long pid = 0;
#if defined(__unix__) || defined(__APPLE__)
    pid = static_cast<long>(::getpid());
#endif
    return Impl::concat(".tmp.", pid, ".", ++counter);
  }
  std::string temp_name() const { return path_ + temp_name_suffix(); }

  void put(const void* data, std::size_t n, const char* what) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      const int err = errno;
      throw Error(Impl::concat(label(), ": writing ", what, " to the temporary file '", temp_,
                               "' failed (", std::strerror(err), ")"));
    }
  }

  template <class Stored, class T>
  void put_values(const T* data, std::size_t count, const std::string& name) {
    const std::string what = "tensor '" + name + "'";
    if (std::is_same<Stored, T>::value && Impl::host_is_little_endian()) {
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
      put(raw.data(), n * sizeof(Stored), what.c_str());
      done += n;
    }
  }

  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  std::size_t next_ = 0;
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
