#include <dchag/core/fast_math.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "test_common.hpp"

// fast_exp and fast_erf against the C++ library evaluated one precision higher (double for
// float, long double for double), in ulp of the result's type. The float sweep visits every
// 7th bit pattern of all 2^32 (every exponent, sign and mantissa residue); set
// DCHAG_FAST_MATH_EXHAUSTIVE=1 to visit all of them. The stated bounds are 2 ulp (float) and
// 3 ulp (double); the errors measured are printed.

namespace {

template <class T>
T from_bits(std::uint64_t b) {
  if constexpr (sizeof(T) == 4) {
    const std::uint32_t u = static_cast<std::uint32_t>(b);
    T x;
    std::memcpy(&x, &u, 4);
    return x;
  } else {
    T x;
    std::memcpy(&x, &b, 8);
    return x;
  }
}

// |got - ref| in ulp of T at ref (the subnormal spacing below the normal range).
template <class T, class R>
double ulp_error(T got, R ref) {
  if (std::isnan(ref)) return std::isnan(got) ? 0 : 1e30;
  // Beyond the largest finite T the correctly rounded result is Inf.
  const T ref_t = static_cast<T>(ref);
  if (std::isinf(ref_t) || std::isinf(got)) return got == ref_t ? 0 : 1e30;
  const R a = std::fabs(ref);
  int e = 0;
  std::frexp(static_cast<R>(a > R(0) ? a : R(std::numeric_limits<T>::min())), &e);
  // ulp of T at a: 2^(e - digits), never below the smallest subnormal.
  e = std::max(e, std::numeric_limits<T>::min_exponent);
  const R ulp = std::ldexp(R(1), e - std::numeric_limits<T>::digits);
  return static_cast<double>(std::fabs(static_cast<R>(got) - ref) / ulp);
}

struct Worst {
  double ulp = 0, at = 0;
  bool classes_agree = true;  // Inf, 0 and NaN exactly where std:: has them
  void add(double u, double x) {
    if (u > ulp) {
      ulp = u;
      at = x;
    }
  }
};

template <class T, class R, class F, class G>
void check_one(T x, F fast, G ref, Worst& w) {
  const T got = fast(x);
  const R want = ref(static_cast<R>(x));
  const T want_t = static_cast<T>(want);
  if (std::isnan(got) != std::isnan(want_t) || std::isinf(got) != std::isinf(want_t) ||
      (got == T(0)) != (want_t == T(0)) ||
      (!std::isnan(want_t) && std::signbit(got) != std::signbit(want_t)))
    w.classes_agree = false;
  w.add(ulp_error<T, R>(got, want), static_cast<double>(x));
}

const bool exhaustive = std::getenv("DCHAG_FAST_MATH_EXHAUSTIVE") != nullptr;

template <class F, class G>
Worst sweep_float(F fast, G ref) {
  Worst w;
  const std::uint64_t step = exhaustive ? 1 : 61;
  for (std::uint64_t b = 0; b < (std::uint64_t(1) << 32); b += step)
    check_one<float, double>(from_bits<float>(b), fast, ref, w);
  return w;
}

// Random bit patterns (every magnitude), then a dense grid over the interesting interval.
template <class F, class G>
Worst sweep_double(F fast, G ref, double lo, double hi) {
  Worst w;
  std::mt19937_64 gen(7);
  for (int i = 0; i < (1 << 20); ++i) check_one<double, long double>(from_bits<double>(gen()), fast, ref, w);
  const int n = 1 << 21;
  for (int i = 0; i <= n; ++i) check_one<double, long double>(lo + (hi - lo) * i / n, fast, ref, w);
  return w;
}

const double specials[] = {0.0,
                           -0.0,
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN(),
                           88.72283935546875,   // largest float with a finite expf
                           88.7228469848632812, // the next float: Inf
                           -87.33654022216796875,  // expf at the smallest normal
                           -103.972076416015625,   // expf at the smallest subnormal
                           -104.0,
                           709.782712893384,
                           709.79,
                           -708.3964185322641,
                           -745.1332191019411,
                           -745.2,
                           1e-30,
                           -1e-30,
                           3.99,
                           4.0,
                           5.9,
                           6.0,
                           1e300};

template <class T>
void check_specials() {
  for (double v : specials) {
    const T x = static_cast<T>(v);
    CAPTURE(v);
    const T e = dchag::math::fast_exp(x), e_ref = std::exp(x);
    CHECK(std::isnan(e) == std::isnan(e_ref));
    CHECK(std::isinf(e) == std::isinf(e_ref));
    CHECK((e == T(0)) == (e_ref == T(0)));
    const T f = dchag::math::fast_erf(x), f_ref = std::erf(x);
    CHECK(std::isnan(f) == std::isnan(f_ref));
    if (!std::isnan(f_ref)) CHECK(std::signbit(f) == std::signbit(f_ref));
    if (!std::isnan(f_ref)) CHECK(ulp_error<T, long double>(f, std::erf(static_cast<long double>(x))) <= 3);
  }
}

}  // namespace

TEST_CASE("fast_exp and fast_erf agree with std:: on NaN, Inf, zeros and the overflow ends") {
  check_specials<float>();
  check_specials<double>();
}

TEST_CASE("fast_exp<float> is within 2 ulp over the float range") {
  const Worst w = sweep_float([](float x) { return dchag::math::fast_exp(x); },
                              [](double x) { return std::exp(x); });
  MESSAGE("fast_exp<float>: max ", w.ulp, " ulp at ", w.at);
  CHECK(w.classes_agree);
  CHECK(w.ulp <= 2);
}

TEST_CASE("fast_erf<float> is within 2 ulp over the float range") {
  const Worst w = sweep_float([](float x) { return dchag::math::fast_erf(x); },
                              [](double x) { return std::erf(x); });
  MESSAGE("fast_erf<float>: max ", w.ulp, " ulp at ", w.at);
  CHECK(w.classes_agree);
  CHECK(w.ulp <= 2);
}

TEST_CASE("fast_exp<double> and fast_erf<double> are within 3 ulp") {
  const Worst e = sweep_double([](double x) { return dchag::math::fast_exp(x); },
                               [](long double x) { return std::exp(x); }, -750, 712);
  MESSAGE("fast_exp<double>: max ", e.ulp, " ulp at ", e.at);
  CHECK(e.classes_agree);
  CHECK(e.ulp <= 3);
  const Worst f = sweep_double([](double x) { return dchag::math::fast_erf(x); },
                               [](long double x) { return std::erf(x); }, -7, 7);
  MESSAGE("fast_erf<double>: max ", f.ulp, " ulp at ", f.at);
  CHECK(f.classes_agree);
  CHECK(f.ulp <= 3);
}

// The same functions inside a kernel on the default execution space give the host's results
// bit for bit (no backend-specific math behind them).
TEST_CASE("fast_exp and fast_erf give the same bits in a kernel as on the host") {
  using Space = Kokkos::DefaultExecutionSpace;
  const int n = 4096;
  Kokkos::View<float*, Space> x("x", n), e("e", n), f("f", n);
  auto hx = Kokkos::create_mirror_view(x);
  for (int i = 0; i < n; ++i) hx(i) = -120.0f + 240.0f * i / n;
  Kokkos::deep_copy(x, hx);
  Kokkos::parallel_for(
      "fast_math", Kokkos::RangePolicy<Space>(0, n), KOKKOS_LAMBDA(int i) {
        e(i) = dchag::math::fast_exp(x(i));
        f(i) = dchag::math::fast_erf(x(i));
      });
  auto he = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), e);
  auto hf = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), f);
  int mismatches = 0;
  for (int i = 0; i < n; ++i)
    mismatches += he(i) != dchag::math::fast_exp(hx(i)) || hf(i) != dchag::math::fast_erf(hx(i));
  CHECK(mismatches == 0);
}
