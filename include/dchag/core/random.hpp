#ifndef DCHAG_CORE_RANDOM_HPP
#define DCHAG_CORE_RANDOM_HPP

// A counter-based random source for parameter initialisation.
//
// Every value is a pure function of (seed, stream, index, draw): no state advances, so any rank
// can produce any element of a tensor without producing the ones before it. That is what lets a
// sharded model start from exactly the weights of the single-rank model.
//
// Values must also be bit-identical across compilers, standard libraries and machines, because
// partition invariance and checkpoints compare runs made in different places. Hence:
// - bits come from integer mixing only (SplitMix64's finaliser), which is exact everywhere;
// - no std::*_distribution (libstdc++ and libc++ produce different numbers from the same engine)
//   and no libm transcendental (exp, log, erf are not correctly rounded, and differ between glibc,
//   musl, Apple and MSVC in the last bits). The only floating-point operations used are +, -, *,
//   /, sqrt and fma, which IEEE 754 defines exactly, and frexp/ldexp, which are exact;
// - every a*b+c is written as std::fma, so a compiler that contracts multiply-adds (GCC and Clang
//   do on aarch64 and POWER by default) cannot change a result. Code built with -ffast-math or
//   an x87 (32-bit x86) FPU is outside this guarantee.
// Generation runs on the host in double; the conversion to float is correctly rounded.

#include <cmath>
#include <cstdint>
#include <string>

#include <dchag/core/hash.hpp>

namespace dchag {

namespace Impl {

// SplitMix64's output function (Steele, Lea & Flood 2014): a bijection on 64 bits that passes
// BigCrush when applied to a counter, which is how it is used here.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr std::uint64_t golden_gamma = 0x9e3779b97f4a7c15ULL;  // 2^64 / golden ratio, odd

// Horner's rule with explicit fma: c[0] + x*(c[1] + x*(... + x*c[N-1])).
template <std::size_t N>
double horner(double x, const double (&c)[N]) {
  double acc = c[N - 1];
  for (std::size_t i = N - 1; i-- > 0;) acc = std::fma(acc, x, c[i]);
  return acc;
}

// Natural logarithm from exact operations only (see the header comment for why not std::log).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(f), f = (m-1)/(m+1), |f| < 0.172,
// whose series in f^2 reaches double precision after eleven terms. Within a few ulp of the true
// value; what matters is that it is the same few ulp on every machine. x must be positive.
inline double portable_log(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1), exact, also for subnormal x
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    --e;
  }
  const double f = (m - 1.0) / (m + 1.0);
  const double s = f * f;
  static constexpr double series[] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,
                                      1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17,
                                      1.0 / 19, 1.0 / 21, 1.0 / 23};
  const double two_f = 2.0 * f;
  const double log_m = std::fma(two_f * s, horner(s, series), two_f);
  // ln 2 split so that e * ln2_hi is exact for any exponent (fdlibm's constants).
  constexpr double ln2_hi = 6.93147180369123816490e-01;
  constexpr double ln2_lo = 1.90821492927058770002e-10;
  const double de = static_cast<double>(e);
  return std::fma(de, ln2_hi, std::fma(de, ln2_lo, log_m));
}

// Quantile of the standard normal distribution, p in (0, 1): Wichura's algorithm AS 241
// (PPND16, Applied Statistics 37, 1988), relative accuracy about 1e-16, with the log above.
inline double inverse_normal_cdf(double p) {
  static constexpr double a[] = {3.3871328727963666080e0,  1.3314166789178437745e+2,
                                 1.9715909503065514427e+3, 1.3731693765509461125e+4,
                                 4.5921953931549871457e+4, 6.7265770927008700853e+4,
                                 3.3430575583588128105e+4, 2.5090809287301226727e+3};
  static constexpr double b[] = {1.0,
                                 4.2313330701600911252e+1, 6.8718700749205790830e+2,
                                 5.3941960214247511077e+3, 2.1213794301586595867e+4,
                                 3.9307895800092710610e+4, 2.8729085735721942674e+4,
                                 5.2264952788528545610e+3};
  static constexpr double c[] = {1.42343711074968357734e0,  4.63033784615654529590e0,
                                 5.76949722146069140550e0,  3.64784832476320460504e0,
                                 1.27045825245236838258e0,  2.41780725177450611770e-1,
                                 2.27238449892691845833e-2, 7.74545014278341407640e-4};
  static constexpr double d[] = {1.0,
                                 2.05319162663775882187e0,  1.67638483018380384940e0,
                                 6.89767334985100004550e-1, 1.48103976427480074590e-1,
                                 1.51986665636164571966e-2, 5.47593808499534494600e-4,
                                 1.05075007164441684324e-9};
  static constexpr double e[] = {6.65790464350110377720e0,  5.46378491116411436990e0,
                                 1.78482653991729133580e0,  2.96560571828504891230e-1,
                                 2.65321895265761230930e-2, 1.24266094738807843860e-3,
                                 2.71155556874348757815e-5, 2.01033439929228813265e-7};
  static constexpr double f[] = {1.0,
                                 5.99832206555887937690e-1, 1.36929880922735805310e-1,
                                 1.48753612908506148525e-2, 7.86869131145613259100e-4,
                                 1.84631831751005468180e-5, 1.42151175831644588870e-7,
                                 2.04426310338993978564e-15};
  const double q = p - 0.5;
  if (std::fabs(q) <= 0.425) {
    const double r = std::fma(-q, q, 0.180625);
    return q * horner(r, a) / horner(r, b);
  }
  double r = q < 0 ? p : 1.0 - p;  // exact: 1 - p for p >= 0.5 (Sterbenz)
  r = std::sqrt(-portable_log(r));
  double z = 0;
  if (r <= 5.0) {
    r -= 1.6;
    z = horner(r, c) / horner(r, d);
  } else {
    r -= 5.0;
    z = horner(r, e) / horner(r, f);
  }
  return q < 0 ? -z : z;
}

}  // namespace Impl

// Stateless generator: value (index, draw) of stream `stream` under seed `seed`. `index` is the
// logical element of a tensor; `draw` numbers the attempts of a rejection sampler for that element.
class CounterRng {
 public:
  constexpr CounterRng(std::uint64_t seed, std::uint64_t stream)
      : key_(Impl::mix64(Impl::mix64(seed + Impl::golden_gamma) ^
                         Impl::mix64(stream * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL))) {}

  // Two mixing rounds over (key, index) and one more over the draw: consecutive indices or draws
  // are never correlated through a shared low-quality step.
  constexpr std::uint64_t bits(std::uint64_t index, std::uint64_t draw = 0) const {
    const std::uint64_t h = Impl::mix64(Impl::mix64(key_ ^ (index * Impl::golden_gamma)) + index);
    return Impl::mix64(h ^ (draw * 0xa0761d6478bd642fULL + 0xe7037ed1a0b428dbULL));
  }

  // Uniform in [0, 1): the top 53 bits as k * 2^-53 (exact).
  double uniform(std::uint64_t index, std::uint64_t draw = 0) const {
    return static_cast<double>(bits(index, draw) >> 11) * 0x1p-53;
  }

  // Uniform in (0, 1), never 0 or 1: (2k + 1) * 2^-53 with k < 2^52 (exact).
  double uniform_open(std::uint64_t index, std::uint64_t draw = 0) const {
    return static_cast<double>(((bits(index, draw) >> 12) << 1) | 1U) * 0x1p-53;
  }

  // Standard normal by inversion (one uniform per draw, so draws stay independent per index).
  double normal(std::uint64_t index, std::uint64_t draw = 0) const {
    return Impl::inverse_normal_cdf(uniform_open(index, draw));
  }

  constexpr std::uint64_t key() const { return key_; }

 private:
  std::uint64_t key_;
};

// A stream number from a parameter name (64-bit FNV-1a), e.g. stream_id("blocks.3.mlp.fc1.weight"):
// names are logical and rank-independent, so every rank derives the same stream for a tensor.
inline std::uint64_t stream_id(const std::string& name) { return Impl::fnv1a(name); }

}  // namespace dchag

#endif
