#ifndef DCHAG_CORE_LOW_PRECISION_HPP
#define DCHAG_CORE_LOW_PRECISION_HPP

// The two 16-bit storage formats of mixed-precision training: bfloat16 (float's exponent, 8
// significant bits) and IEEE half (5-bit exponent, 11 significant bits). They are storage
// types, not arithmetic types: a value converts to float implicitly, arithmetic happens in
// float, and the result rounds (to nearest, ties to even) only when stored back. Kernels keep
// their sums in ScalarTraits<T>::accum_type (core/scalar_traits.hpp), never in a 16-bit type.
//
// Our own types rather than Kokkos::Experimental::bhalf_t / half_t: those exist only from
// Kokkos 4, and Debian's Kokkos 3.4 must build the same model. Both are trivially copyable
// 2-byte structs, so Kokkos views, deep copies and MPI (as 16-bit integers) carry them as is.

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <ostream>
#include <type_traits>

#include <dchag/core/fast_math.hpp>

namespace dchag {

namespace Impl {

// Round to nearest even by adding 0x7fff plus the lowest kept bit, then truncating; a NaN
// keeps its sign and top payload bits and is made quiet, so it cannot round to infinity.
KOKKOS_INLINE_FUNCTION std::uint16_t float_to_bfloat16_bits(float f) {
  const std::uint32_t u = bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

KOKKOS_INLINE_FUNCTION float bfloat16_bits_to_float(std::uint16_t b) {
  return bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// float -> IEEE half, round to nearest even, without branches on the data in the normal path.
// Normal results: rebias the exponent and round the 13 dropped bits like the bfloat16 case.
// Results below half's smallest normal (2^-14): adding 0.5f aligns the value so that float's
// own rounding performs the right shift to half's subnormal scale (2^-24 steps).
KOKKOS_INLINE_FUNCTION std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t u = bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  std::uint32_t a = u & 0x7fffffffu;
  std::uint32_t h;
  if (a > 0x7f800000u) {
    h = 0x7e00u | ((a >> 13) & 0x3ffu);  // quiet NaN
  } else if (a >= 0x477ff000u) {
    h = 0x7c00u;  // rounds to 65520 or more, or is infinite: infinity
  } else if (a < 0x38800000u) {
    const float aligned = bit_cast<float>(a) + 0.5f;
    h = bit_cast<std::uint32_t>(aligned) - 0x3f000000u;
  } else {
    const std::uint32_t odd = (a >> 13) & 1u;
    a += 0xc8000fffu + odd;  // (15 - 127) << 23 (mod 2^32), plus the rounding term
    h = a >> 13;
  }
  return static_cast<std::uint16_t>(sign | h);
}

// IEEE half -> float, exactly. Subnormals: place the 10 mantissa bits under the exponent of
// 2^-14 and subtract 2^-14, which float renormalises exactly.
KOKKOS_INLINE_FUNCTION float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t exponent_mask = 0x7c00u << 13;
  std::uint32_t o = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  const std::uint32_t exponent = o & exponent_mask;
  o += (127u - 15u) << 23;
  if (exponent == exponent_mask) {
    o += (128u - 16u) << 23;  // infinity or NaN: exponent all ones
  } else if (exponent == 0) {
    o += 1u << 23;
    o = bit_cast<std::uint32_t>(bit_cast<float>(o) - bit_cast<float>(113u << 23));
  }
  return bit_cast<float>(o | (static_cast<std::uint32_t>(h & 0x8000u) << 16));
}

// What a 16-bit type converts from implicitly: every arithmetic type, through float. One
// template instead of an overload per type, so that `T(n)` with n a size_t is not ambiguous.
template <class U>
using enable_if_arithmetic = std::enable_if_t<std::is_arithmetic<U>::value, int>;

struct BFloat16Format {
  KOKKOS_INLINE_FUNCTION static std::uint16_t encode(float f) {
    return float_to_bfloat16_bits(f);
  }
  KOKKOS_INLINE_FUNCTION static float decode(std::uint16_t b) {
    return bfloat16_bits_to_float(b);
  }
};
struct HalfFormat {
  KOKKOS_INLINE_FUNCTION static std::uint16_t encode(float f) { return float_to_half_bits(f); }
  KOKKOS_INLINE_FUNCTION static float decode(std::uint16_t b) { return half_bits_to_float(b); }
};

// A value of a 16-bit format: its bits, read as float, written back rounded.
template <class Format>
struct Float16 {
  std::uint16_t bits;

  Float16() = default;
  template <class U, enable_if_arithmetic<U> = 0>
  KOKKOS_INLINE_FUNCTION Float16(U value) : bits(Format::encode(static_cast<float>(value))) {}
  KOKKOS_INLINE_FUNCTION operator float() const { return Format::decode(bits); }

  KOKKOS_INLINE_FUNCTION static Float16 from_bits(std::uint16_t b) {
    Float16 v;
    v.bits = b;
    return v;
  }
  KOKKOS_INLINE_FUNCTION Float16& operator+=(float x) { return *this = float(*this) + x; }
  KOKKOS_INLINE_FUNCTION Float16& operator-=(float x) { return *this = float(*this) - x; }
  KOKKOS_INLINE_FUNCTION Float16& operator*=(float x) { return *this = float(*this) * x; }
  KOKKOS_INLINE_FUNCTION Float16& operator/=(float x) { return *this = float(*this) / x; }
};

template <class Format>
std::ostream& operator<<(std::ostream& os, Float16<Format> v) {
  return os << float(v);
}

}  // namespace Impl

// bfloat16: the upper half of a float. Same range as float, so no loss scaling is needed.
using bf16 = Impl::Float16<Impl::BFloat16Format>;
// IEEE 754 binary16. Largest finite value 65504, smallest normal 2^-14: gradients underflow
// without loss scaling (train/loss_scaler.hpp).
using fp16 = Impl::Float16<Impl::HalfFormat>;

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable<bf16>::value, "bf16 is 2 bytes");
static_assert(sizeof(fp16) == 2 && std::is_trivially_copyable<fp16>::value, "fp16 is 2 bytes");

}  // namespace dchag

#endif
