#ifndef DCHAG_IO_HALF_HPP
#define DCHAG_IO_HALF_HPP

// The 16-bit floating-point formats PyTorch writes, IEEE half (F16) and bfloat16 (BF16),
// converted to float exactly (both are subsets of float). Reading converts them; nothing here
// writes them (a checkpoint is F32 or F64).

#include <cstdint>
#include <cstring>

namespace dchag {

namespace Impl {

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

}  // namespace Impl

}  // namespace dchag

#endif
