#ifndef DCHAG_CORE_FAST_MATH_HPP
#define DCHAG_CORE_FAST_MATH_HPP

// exp and erf for the activation and softmax kernels, written so that a loop calling them
// vectorises. The libm versions are opaque calls with branches: a loop over std::exp or
// std::erf runs one element at a time, and the GELU and softmax kernels then reach a few per
// cent of the memory bandwidth. Here everything is straight-line arithmetic on the value and
// its bits (polynomials, a power of two assembled in the exponent field, selects instead of
// branches), identical on every backend.
//
// Accuracy (tests/core/test_fast_math.cpp measures it against std:: over every float and a
// dense double sample): within 2 ulp for float, 3 ulp for double, on the whole range. NaN, +-Inf,
// +-0, overflow to Inf and gradual underflow to subnormals and 0 behave as std::exp and
// std::erf do.
//
// The tricks assume IEEE arithmetic in round-to-nearest without value-unsafe reassociation
// (no -ffast-math), like every other numerically careful kernel in the library. The erf
// polynomials are Chebyshev interpolants converted to monomials, produced by
// scripts/fit_erf_coefficients.cpp.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace dchag {
namespace Impl {

// memcpy is the portable type pun, and what Kokkos::bit_cast does on every backend; compilers
// reduce it to a register move, which keeps the loop vectorisable.
template <class To, class From>
KOKKOS_INLINE_FUNCTION To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of one size");
  To to;
  memcpy(static_cast<void*>(&to), static_cast<const void*>(&from), sizeof(To));
  return to;
}

template <int Bytes>
struct UintOf;
template <>
struct UintOf<4> {
  using type = std::uint32_t;
};
template <>
struct UintOf<8> {
  using type = std::uint64_t;
};

// c ? a : b through bit masks. A ?: on floating-point values is a branch to the compiler;
// honouring FP exceptions (the default), it then keeps the arithmetic that feeds one side
// inside that branch, and a loop with a branch does not vectorise. Masks leave no branch.
template <class T>
KOKKOS_INLINE_FUNCTION T select(bool c, T a, T b) {
  using U = typename UintOf<sizeof(T)>::type;
  const U m = U(0) - U(c);
  return bit_cast<T>((bit_cast<U>(a) & m) | (bit_cast<U>(b) & ~m));
}

template <class T>
KOKKOS_INLINE_FUNCTION T horner(T) {
  return T(0);
}
// c0 + t (c1 + t (c2 + ...)).
template <class T, class... Cs>
KOKKOS_INLINE_FUNCTION T horner(T t, T c0, Cs... cs) {
  if constexpr (sizeof...(Cs) == 0) {
    return c0;
  } else {
    return c0 + t * horner(t, T(cs)...);
  }
}

template <class T>
struct ExpTraits;

// x = k ln2 + r, |r| <= ln2 / 2, exp(x) = 2^k exp(r). ln2 is split in two (Cody and Waite) so
// that k * ln2_hi is exact and r keeps its low bits. Adding `magic` (1.5 * 2^mantissa bits)
// rounds x log2(e) to an integer that then sits in the low mantissa bits of the sum.
template <>
struct ExpTraits<float> {
  using Int = std::int32_t;
  static constexpr int mantissa = 23, bias = 127;
  static constexpr float magic = 12582912.0f;  // 0x1.8p23
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  // Below lo the result is 0 (under 2^-150, half the smallest subnormal); above hi it is Inf.
  static constexpr float lo = -104.0f, hi = 89.0f;
  // Taylor to degree 7: the remainder is under 0.1 ulp for |r| <= ln2 / 2.
  KOKKOS_INLINE_FUNCTION static float poly(float r) {
    return horner(r, 1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040);
  }
};

template <>
struct ExpTraits<double> {
  using Int = std::int64_t;
  static constexpr int mantissa = 52, bias = 1023;
  static constexpr double magic = 6755399441055744.0;  // 0x1.8p52
  static constexpr double log2e = 1.44269504088896340736;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double lo = -746.0, hi = 710.0;
  // Taylor to degree 13: the remainder is under 0.05 ulp for |r| <= ln2 / 2.
  KOKKOS_INLINE_FUNCTION static double poly(double r) {
    return horner(r, 1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                  1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
                  1.0 / 6227020800.0);
  }
};

// 2^k for |k| within the normal exponent range.
template <class T>
KOKKOS_INLINE_FUNCTION T pow2(typename ExpTraits<T>::Int k) {
  using E = ExpTraits<T>;
  // Shifted unsigned: the k a NaN argument makes may be anything, and a signed shift of it
  // undefined.
  using U = std::make_unsigned_t<typename E::Int>;
  return bit_cast<T>(static_cast<typename E::Int>((static_cast<U>(k) + U(E::bias)) << E::mantissa));
}

}  // namespace Impl

namespace math {

// exp(x) for float or double, within 1 ulp of std::exp for float, 2 for double (see above).
template <class T>
KOKKOS_INLINE_FUNCTION T fast_exp(T x) {
  using E = Impl::ExpTraits<T>;
  using Int = typename E::Int;
  // Clamping keeps k in range; the clamped ends still overflow to Inf and underflow to 0.
  // Constants copied to locals: device code may not take the address of a static member.
  const T lo = E::lo, hi = E::hi, magic = E::magic;
  const T xc = Impl::select(x < lo, lo, Impl::select(x > hi, hi, x));
  const T y = xc * E::log2e + magic;
  // Unsigned difference, for the same reason as in pow2.
  using U = std::make_unsigned_t<Int>;
  const Int k = static_cast<Int>(Impl::bit_cast<U>(y) - Impl::bit_cast<U>(magic));
  const T kf = y - magic;
  const T r = (xc - kf * E::ln2_hi) - kf * E::ln2_lo;
  const T p = E::poly(r);
  // 2^k in two factors, each a normal number, so that results near the ends of the range
  // overflow to Inf or round gradually to subnormals, rounded once, in the last product.
  const Int k1 = k >> 1;
  const Int k2 = static_cast<Int>(static_cast<U>(k) - static_cast<U>(k1));
  // A NaN passes the clamp (both comparisons are false) and propagates to the result.
  return (p * Impl::pow2<T>(k1)) * Impl::pow2<T>(k2);
}

}  // namespace math

namespace Impl {

template <class T>
struct ErfTraits;

// |x| < 1: erf(x) = x P(x^2), P in t = 2 x^2 - 1. 1 <= |x| < big: erf(|x|) = 1 - exp(Q - x^2),
// Q ~ log(erfc(|x|) exp(x^2)) in t = (|x| - mid) / half. Fitting log(erfc) itself would need
// large coefficients of both signs that cancel near |x| = 1, costing 3 ulp there; the scaled
// function stays near -1.5. From `big` on, erf rounds to +-1.
template <>
struct ErfTraits<float> {
  static constexpr float big = 4.0f, mid = 2.5f, half = 1.5f;
  // P - 1: added to x as x + x (P - 1), so that the rounding of the large leading
  // coefficient does not cost half an ulp.
  KOKKOS_INLINE_FUNCTION static float small(float t) {
    return horner(t, -0.03453126133013269f, -0.14053609727754268f, 0.01985249714090763f,
                  -0.0022854195448728445f, 0.00021751354165578771f, -1.7669068026129415e-05f,
                  1.2306054785699413e-06f);
  }
  KOKKOS_INLINE_FUNCTION static float log_erfcx(float t) {
    return horner(t, -1.5568152727272644f, -0.52902101133673076f, 0.12623916687603588f,
                  -0.036647578044776809f, 0.01096184921763522f, -0.0031903054131416202f,
                  0.0008803970815024556f, -0.00022749950380418185f, 4.195840012165275e-05f);
  }
};

template <>
struct ErfTraits<double> {
  static constexpr double big = 6.0, mid = 3.5, half = 2.5;
  KOKKOS_INLINE_FUNCTION static double small(double t) {
    return horner(t, -0.0345312613301327, -0.14053608902271711, 0.019852496688984218,
                  -0.002285485561144172, 0.00021751715603564828, -1.7537169440963878e-05,
                  1.2233827637532675e-06, -7.5115692955059673e-08, 4.1157515763556862e-09,
                  -2.0352294907248029e-10, 9.2112174369477865e-12, -3.8069778810860081e-13);
  }
  KOKKOS_INLINE_FUNCTION static double log_erfcx(double t) {
    return horner(t, -1.8624374021481738, -0.66524897091297671, 0.20779340786106131,
                  -0.081650909717856678, 0.034128411079729637, -0.014384548328883123,
                  0.0059537044769510643, -0.0023739973008547195, 0.00089357657361409576,
                  -0.00030781940001745389, 9.0901004235067751e-05, -1.8475297207711794e-05,
                  -1.478032617989733e-06, 4.5684182391170225e-06, -3.4205218246974312e-06,
                  1.912661369871671e-06, -9.163990061011873e-07, 3.9193383258862013e-07,
                  -1.3015233633950629e-07, 1.8819717411133752e-08, -2.0573872916429536e-09,
                  4.7223556975950487e-09, 4.4841272028861567e-09, -7.2427883424097672e-09,
                  2.2533095034305006e-09);
  }
};

// erf(x) for |x| < 1, the first piece of fast_erf: callers that know their arguments lie there
// (the GELU kernels check a block at a time) get fast_erf's bits without its second piece.
template <class T>
KOKKOS_INLINE_FUNCTION T erf_inner(T x) {
  return x + x * ErfTraits<T>::small(T(2) * (x * x) - T(1));  // keeps the sign, and -0 for -0
}

}  // namespace Impl

namespace math {

// erf(x) for float or double, within 2 ulp of std::erf for float, 3 for double (see above).
// Both pieces are evaluated and one selected, so that a loop has no branch to vectorise around.
template <class T>
KOKKOS_INLINE_FUNCTION T fast_erf(T x) {
  using E = Impl::ErfTraits<T>;
  const T a = Impl::select(x < T(0), -x, x);
  const T inner = Impl::erf_inner(x);
  // Clamped to the interval of the fit, so that the unused piece stays finite.
  const T big = E::big;
  const T ac = Impl::select(a < T(1), T(1), Impl::select(a > big, big, a));
  const T outer = T(1) - fast_exp(E::log_erfcx((ac - E::mid) * (T(1) / E::half)) - ac * ac);
  const T tail = Impl::select(a >= big, T(1), outer);
  const T signed_tail = Impl::select(x < T(0), -tail, tail);
  // A NaN fails every comparison and reaches the result through signed_tail.
  return Impl::select(a < T(1), inner, signed_tail);
}

}  // namespace math
}  // namespace dchag

#endif
