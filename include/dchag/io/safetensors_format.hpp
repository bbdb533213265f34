#ifndef DCHAG_IO_SAFETENSORS_FORMAT_HPP
#define DCHAG_IO_SAFETENSORS_FORMAT_HPP

// The vocabulary of the safetensors format that its reader (io/safetensors_reader.hpp), its
// header parser and its writer share: what the header says about one tensor, the dtypes and
// their widths, the limits and the metadata key of our checksums, and the little-endian byte
// order every value of the file is stored in (whatever the host's). See io/safetensors.hpp for
// the format itself.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/low_precision.hpp>
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

template <class T>
constexpr bool safetensors_scalar() {
  return std::is_same<T, float>::value || std::is_same<T, double>::value ||
         std::is_same<T, bf16>::value || std::is_same<T, fp16>::value;
}

// F32, F64, BF16 or F16: the raw bits of the scalar, little-endian.
template <class T>
constexpr const char* safetensors_dtype_of() {
  static_assert(safetensors_scalar<T>(),
                "dchag safetensors: tensors are float (F32), double (F64), bf16 (BF16) or fp16 "
                "(F16)");
  return ScalarTraits<T>::dtype;
}

// The float nearest to d rounded to odd: truncated towards zero, the last bit set when that was
// inexact. Rounding that once more to nearest even in a format of at most 22 significant bits
// (bf16, fp16) gives d rounded to that format directly; through float's own rounding to
// nearest, a double just above a 16-bit halfway point could first land on it and then round to
// even, the wrong way.
inline float round_to_odd_float(double d) {
  const float f = static_cast<float>(d);
  if (std::isnan(d) || static_cast<double>(f) == d) return f;
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) --u;  // magnitude down: truncation
  u |= 1u;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

// x as To, rounded to nearest even where To is narrower; one rounding also from double to a
// 16-bit type, and 16-bit types convert through float (exact), also into each other.
template <class To, class From>
To convert_scalar(From x) {
  if constexpr (std::is_same<To, From>::value) {
    return x;
  } else if constexpr (is_low_precision_v<To> && std::is_same<From, double>::value) {
    return To(round_to_odd_float(x));
  } else if constexpr (is_low_precision_v<From>) {
    return To(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
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
