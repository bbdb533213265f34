#ifndef DCHAG_IO_SAFETENSORS_FORMAT_HPP
#define DCHAG_IO_SAFETENSORS_FORMAT_HPP

// The vocabulary of the safetensors format that its reader (io/safetensors_reader.hpp), its
// header parser and its writer share: what the header says about one tensor, the dtypes and
// their widths, the limits and the metadata key of our checksums, and the little-endian byte
// order every value of the file is stored in (whatever the host's). See io/safetensors.hpp for
// the format itself.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/scalar_traits.hpp>

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

// The dtypes the library reads and writes: F32, F64, BF16 and F16 (ScalarTraits<T>::dtype).
template <class T>
constexpr const char* safetensors_dtype_of() {
  return ScalarTraits<std::remove_cv_t<T>>::dtype;
}

inline bool safetensors_writable(const std::string& dtype) { return safetensors_readable(dtype); }

// A value of one of the four scalar types as another, rounding to nearest even when narrowing
// (through the compute type: the 16-bit types convert only to and from arithmetic types).
template <class To, class From>
To convert_scalar(From x) {
  return static_cast<To>(static_cast<compute_t<From>>(x));
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


}  // namespace Impl

}  // namespace dchag

#endif
