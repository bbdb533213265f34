#include <dchag/core/low_precision.hpp>
#include <dchag/core/scalar_traits.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "test_common.hpp"

// The 16-bit formats against references written independently of the bit manipulation in
// core/low_precision.hpp: decoding by the formats' definitions (sign, exponent, mantissa times
// a power of two, std::ldexp), and encoding as the nearest representable value found by
// binary search in the sorted table of every finite value, ties to the even bit pattern.

namespace {

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// (-1)^s * 1.m * 2^(e - bias), subnormals 0.m * 2^(1 - bias).
double decode(std::uint16_t b, int mantissa_bits, int exponent_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int e = (b >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int m = b & ((1 << mantissa_bits) - 1);
  const double sign = (b >> 15) ? -1.0 : 1.0;
  if (e == (1 << exponent_bits) - 1)
    return m ? std::numeric_limits<double>::quiet_NaN()
             : sign * std::numeric_limits<double>::infinity();
  if (e == 0) return sign * std::ldexp(double(m), 1 - bias - mantissa_bits);
  return sign * std::ldexp(double((1 << mantissa_bits) + m), e - bias - mantissa_bits);
}

struct Format {
  int mantissa_bits, exponent_bits;
  std::vector<std::pair<double, std::uint16_t>> finite;  // sorted by value, +0 only

  Format(int mb, int eb) : mantissa_bits(mb), exponent_bits(eb) {
    for (std::uint32_t b = 0; b < 0x8000u; ++b) {
      const double v = decode(static_cast<std::uint16_t>(b), mb, eb);
      if (std::isfinite(v)) finite.emplace_back(v, static_cast<std::uint16_t>(b));
    }
    std::sort(finite.begin(), finite.end());
  }

  // Round to nearest, ties to even; beyond the largest finite value by half a step or more:
  // infinity (IEEE 754 overflow under round-to-nearest).
  std::uint16_t encode(double x) const {
    const std::uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
    const double a = std::fabs(x);
    const double largest = finite.back().first;
    const double step = largest - finite[finite.size() - 2].first;
    const std::uint16_t inf = static_cast<std::uint16_t>(((1u << exponent_bits) - 1u)
                                                         << mantissa_bits);
    if (a >= largest + step / 2) return sign | inf;
    auto hi = std::lower_bound(finite.begin(), finite.end(), std::make_pair(a, std::uint16_t(0)));
    if (hi == finite.end()) return sign | finite.back().second;
    if (hi->first == a || hi == finite.begin()) return sign | hi->second;
    auto lo = hi - 1;
    const double dlo = a - lo->first, dhi = hi->first - a;
    if (dlo < dhi) return sign | lo->second;
    if (dhi < dlo) return sign | hi->second;
    return sign | ((lo->second & 1u) ? hi->second : lo->second);
  }
};

const Format& bf16_format() {
  static const Format f(7, 8);
  return f;
}
const Format& fp16_format() {
  static const Format f(10, 5);
  return f;
}

// Every 2^32 / stride-th float pattern: every exponent, both signs, many mantissa residues,
// and the halfway cases (mantissa patterns ending in 0x8000 / 0x1000) explicitly.
template <class F>
void for_float_sweep(F&& f) {
  for (std::uint64_t u = 0; u < (std::uint64_t(1) << 32); u += 4099) f(std::uint32_t(u));
  for (std::uint32_t e = 0; e < 256; ++e)
    for (std::uint32_t s = 0; s < 2; ++s)
      for (std::uint32_t low : {0x8000u, 0x18000u, 0x1000u, 0x3000u, 0x7fffu, 0x0fffu, 0x1001u})
        f((s << 31) | (e << 23) | low);
}

}  // namespace

TEST_CASE("bf16 and fp16 decode every pattern as the format defines it") {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const double ref_b = decode(bits, 7, 8), ref_h = decode(bits, 10, 5);
    const float got_b = dchag::bf16::from_bits(bits), got_h = dchag::fp16::from_bits(bits);
    if (std::isnan(ref_b)) {
      REQUIRE(std::isnan(got_b));
    } else {
      REQUIRE(double(got_b) == ref_b);
      REQUIRE(std::signbit(got_b) == std::signbit(ref_b));
      REQUIRE(dchag::bf16(got_b).bits == bits);  // every value survives a round trip
    }
    if (std::isnan(ref_h)) {
      REQUIRE(std::isnan(got_h));
    } else {
      REQUIRE(double(got_h) == ref_h);
      REQUIRE(std::signbit(got_h) == std::signbit(ref_h));
      REQUIRE(dchag::fp16(got_h).bits == bits);
    }
  }
}

TEST_CASE("float to bf16 and fp16 rounds to nearest even, overflows to infinity, keeps NaN") {
  std::size_t checked = 0;
  for_float_sweep([&](std::uint32_t u) {
    const float x = bits_to_float(u);
    const dchag::bf16 b(x);
    const dchag::fp16 h(x);
    if (std::isnan(x)) {
      REQUIRE(std::isnan(float(b)));
      REQUIRE(std::isnan(float(h)));
      return;
    }
    const std::uint16_t ref_b = bf16_format().encode(x), ref_h = fp16_format().encode(x);
    if (b.bits != ref_b || h.bits != ref_h) {
      INFO("float bits 0x" << std::hex << u << ": bf16 0x" << b.bits << " expected 0x" << ref_b
                           << ", fp16 0x" << h.bits << " expected 0x" << ref_h);
      REQUIRE(false);
    }
    ++checked;
  });
  CHECK(checked > 1000000);
  // Named cases, for the reader.
  CHECK(dchag::fp16(65504.0f).bits == 0x7bffu);
  CHECK(dchag::fp16(65519.996f).bits == 0x7bffu);
  CHECK(dchag::fp16(65520.0f).bits == 0x7c00u);
  CHECK(dchag::fp16(std::ldexp(1.0f, -24)).bits == 0x0001u);
  CHECK(dchag::fp16(std::ldexp(1.0f, -25)).bits == 0x0000u);  // tie to even: zero
  CHECK(dchag::bf16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3f80u);  // tie to even: 1
  CHECK(float(dchag::bf16(3.0e38f)) == doctest::Approx(3.0e38f).epsilon(1e-2));
}

TEST_CASE("bf16 and fp16 arithmetic happens in float and rounds on store") {
  dchag::bf16 a(1.0f), b(std::ldexp(1.0f, -9));
  // 1 + 2^-9 is not a bf16; the float sum is exact, the stored one rounds back to 1.
  CHECK(a + b == 1.0f + std::ldexp(1.0f, -9));
  a += b;
  CHECK(float(a) == 1.0f);
  const std::size_t n = 7;
  CHECK(float(dchag::fp16(n)) == 7.0f);  // integral types convert without ambiguity
  CHECK(float(dchag::bf16(-2.5)) == -2.5f);
  static_assert(std::is_same<dchag::accum_t<dchag::bf16>, float>::value, "");
  static_assert(std::is_same<dchag::accum_t<const dchag::fp16>, float>::value, "");
  static_assert(std::is_same<dchag::accum_t<double>, double>::value, "");
  static_assert(dchag::is_low_precision_v<dchag::bf16> && !dchag::is_low_precision_v<float>, "");
  static_assert(dchag::ScalarTraits<dchag::fp16>::needs_loss_scaling, "");
  CHECK(std::string(dchag::ScalarTraits<dchag::bf16>::dtype) == "BF16");
}

TEST_CASE_TEMPLATE_DEFINE("16-bit conversions in kernels equal the host's", Case,
                          low_precision_device) {
  using Space = typename Case::space;
  // All 2^16 patterns decoded and re-encoded on the device, plus the float sweep's rounding.
  const int n = 1 << 16;
  Kokkos::View<float*, typename Space::memory_space> from_b("from_b", n), from_h("from_h", n);
  Kokkos::View<std::uint16_t*, typename Space::memory_space> to_b("to_b", n), to_h("to_h", n);
  Kokkos::parallel_for(
      Kokkos::RangePolicy<Space>(Space(), 0, n), KOKKOS_LAMBDA(int i) {
        const auto bits = static_cast<std::uint16_t>(i);
        from_b(i) = dchag::bf16::from_bits(bits);
        from_h(i) = dchag::fp16::from_bits(bits);
        // A float between neighbours: the pattern shifted up, with rounding bits set.
        const float x = dchag::Impl::bit_cast<float>((std::uint32_t(i) << 16) | 0x8000u);
        to_b(i) = dchag::bf16(x).bits;
        to_h(i) = dchag::fp16(x).bits;
      });
  auto hb = dchag_test::to_host(from_b), hh = dchag_test::to_host(from_h);
  auto tb = dchag_test::to_host(to_b), th = dchag_test::to_host(to_h);
  for (int i = 0; i < n; ++i) {
    const auto bits = static_cast<std::uint16_t>(i);
    const float rb = dchag::bf16::from_bits(bits), rh = dchag::fp16::from_bits(bits);
    REQUIRE((std::isnan(rb) ? std::isnan(hb(i)) : hb(i) == rb));
    REQUIRE((std::isnan(rh) ? std::isnan(hh(i)) : hh(i) == rh));
    const float x = bits_to_float((std::uint32_t(i) << 16) | 0x8000u);
    REQUIRE(tb(i) == dchag::bf16(x).bits);
    REQUIRE(th(i) == dchag::fp16(x).bits);
  }
}
TEST_CASE_TEMPLATE_APPLY(low_precision_device, dchag_test::AllCases);
