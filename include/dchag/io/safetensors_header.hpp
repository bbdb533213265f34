#ifndef DCHAG_IO_SAFETENSORS_HEADER_HPP
#define DCHAG_IO_SAFETENSORS_HEADER_HPP

// The JSON header of a safetensors file: a strict one-pass parser straight into the tensor list
// and the metadata (SafetensorsHeaderParser), and the quoting of strings for a header that is
// written. Both sides refuse what every safetensors reader would refuse (invalid UTF-8, for
// one), so a file we write is a file the reference implementation reads. What the entries say
// is checked against the data by the reader (io/safetensors_reader.hpp).

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/io/safetensors_format.hpp>

namespace dchag {

namespace Impl {

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

}  // namespace Impl

}  // namespace dchag

#endif
