#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/random.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Every element of a view, row-major, in double (exact for float and double views).
template <class View>
std::vector<double> values(const View& v) {
  auto h = to_host(v);
  std::vector<double> out;
  if constexpr (View::rank == 1) {
    for (std::size_t i = 0; i < h.extent(0); ++i) out.push_back(double(h(i)));
  } else if constexpr (View::rank == 2) {
    for (std::size_t i = 0; i < h.extent(0); ++i)
      for (std::size_t j = 0; j < h.extent(1); ++j) out.push_back(double(h(i, j)));
  } else {
    static_assert(View::rank == 3, "values(): ranks 1 to 3");
    for (std::size_t i = 0; i < h.extent(0); ++i)
      for (std::size_t j = 0; j < h.extent(1); ++j)
        for (std::size_t k = 0; k < h.extent(2); ++k) out.push_back(double(h(i, j, k)));
  }
  return out;
}

bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

std::size_t count_equal(const std::vector<double>& a, const std::vector<double>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += a[i] == b[i];
  return n;
}

double normal_pdf(double x) {
  return std::exp(-0.5 * x * x) / std::sqrt(2.0 * 3.14159265358979323846);
}
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

struct Moments {
  double mean = 0, stddev = 0, min = 0, max = 0;
};

Moments moments(const std::vector<double>& x) {
  Moments m;
  m.min = *std::min_element(x.begin(), x.end());
  m.max = *std::max_element(x.begin(), x.end());
  for (double v : x) m.mean += v;
  m.mean /= double(x.size());
  for (double v : x) m.stddev += (v - m.mean) * (v - m.mean);
  m.stddev = std::sqrt(m.stddev / double(x.size() - 1));
  return m;
}

// Kolmogorov-Smirnov distance between the sample and a CDF.
template <class Cdf>
double ks_distance(std::vector<double> x, const Cdf& cdf) {
  std::sort(x.begin(), x.end());
  const double n = double(x.size());
  double d = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double f = cdf(x[i]);
    d = std::max({d, f - double(i) / n, double(i + 1) / n - f});
  }
  return d;
}

// The sin-cos embedding written from the formula a second way: omega = exp(-2j ln(10000) / dim).
double sincos_reference(std::size_t dim, std::size_t k, double position) {
  const std::size_t half = dim / 2;
  const std::size_t j = k % half;
  const double omega = std::exp(-2.0 * double(j) * std::log(10000.0) / double(dim));
  return k < half ? std::sin(position * omega) : std::cos(position * omega);
}

}  // namespace

// These pin the generator itself. If one fails on some platform, initial weights differ there
// and checkpoints/partition-invariance comparisons across machines are no longer exact.
TEST_CASE("CounterRng: values are pinned on every platform") {
  const dchag::CounterRng r0(0, 0), r1(42, 7);
  CHECK(r0.bits(0) == 0x013b5d775718e70bULL);
  CHECK(r0.bits(1) == 0x3d5d78a63d121425ULL);
  CHECK(r0.bits(2) == 0x8074399e0f85f71aULL);
  CHECK(r1.bits(5, 3) == 0x2938753f297f9376ULL);
  CHECK(r1.bits(1ULL << 40) == 0x5c8a106ecbac0fa8ULL);
  CHECK(r1.uniform(0) == 0x1.91471984bce72p-1);
  CHECK(r1.normal(0) == 0x1.91df293744bb7p-1);
  CHECK(r1.normal(1) == 0x1.30beabc8e5918p+0);
  CHECK(r1.normal(2) == -0x1.b782fcd4f55ebp-2);
  CHECK(r1.normal(3) == -0x1.02a9057add89bp-1);
  CHECK(dchag::stream_id("blocks.0.attn.qkv.weight") == 0xb8eed840ed199670ULL);

  Kokkos::View<double*, Kokkos::HostSpace> v("v", 6);
  dchag::truncated_normal(v, 2024, dchag::stream_id("pos"), 0.02);
  const double tn[] = {-0x1.8f7eb01d69995p-6, -0x1.c09b9527e1985p-6, 0x1.e99a2e50ba384p-7,
                       -0x1.80a8c17fcf556p-7, 0x1.1b7448f1479f6p-6,  -0x1.b05f02b8baa16p-7};
  for (int i = 0; i < 6; ++i) CHECK(v(i) == tn[i]);
  dchag::uniform(v, 2024, 3, -0.5, 0.25);
  const double un[] = {0x1.dca215a0dd49ep-3, -0x1.c184d212485ep-2, -0x1.d20c3a33ae08fp-3,
                       0x1.5c02ee9c6612bp-3, 0x1.af8dac39ea406p-4, -0x1.d2e53df6484e4p-3};
  for (int i = 0; i < 6; ++i) CHECK(v(i) == un[i]);
}

TEST_CASE("portable log and normal quantile agree with libm") {
  for (double x : {1e-310, 1e-300, 1e-16, 0.1, 0.5, 0.70710678, 0.99999, 1.0, 1.00001, 1.5, 2.0,
                   3.0, 10.0, 1e10, 1e300}) {
    CAPTURE(x);
    CHECK(std::abs(dchag::Impl::portable_log(x) - std::log(x)) <=
          4e-16 * std::max(1e-5, std::abs(std::log(x))));
  }
  // Quantiles down to 2^-53, the smallest uniform_open value; the far tail uses AS 241's third
  // approximation (r > 5), the rest its first two.
  for (double p : {0x1p-53, 1e-15, 1e-12, 1e-8, 1e-4, 0.01, 0.0228, 0.075, 0.3, 0.5, 0.7, 0.99}) {
    CAPTURE(p);
    const double z = dchag::Impl::inverse_normal_cdf(p);
    CHECK(std::abs(normal_cdf(z) - p) <= 1e-13 * p);
    const double q = 1.0 - p, p_exact = 1.0 - q;  // q rounds; p_exact = 1 - q holds exactly
    CHECK(dchag::Impl::inverse_normal_cdf(q) ==
          doctest::Approx(-dchag::Impl::inverse_normal_cdf(p_exact)).epsilon(1e-12));
  }
}

TEST_CASE_TEMPLATE_DEFINE("init: same seed and stream give identical values, others differ", C,
                          init_reproducible) {
  using Space = typename C::space;
  using T = typename C::scalar;
  dchag::View2<T, Space> a("a", 17, 23), b("b", 17, 23), c("c", 17, 23), d("d", 17, 23);
  dchag::truncated_normal(a, 7, 3, 0.02);
  dchag::truncated_normal(b, 7, 3, 0.02);
  dchag::truncated_normal(c, 8, 3, 0.02);
  dchag::truncated_normal(d, 7, 4, 0.02);
  const auto va = values(a);
  CHECK(bitwise_equal(va, values(b)));
  CHECK(count_equal(va, values(c)) < 5);
  CHECK(count_equal(va, values(d)) < 5);

  dchag::uniform(a, 7, 3, -0.1, 0.1);
  dchag::uniform(b, 7, 3, -0.1, 0.1);
  dchag::uniform(c, 8, 3, -0.1, 0.1);
  dchag::uniform(d, 7, 4, -0.1, 0.1);
  const auto ua = values(a);
  CHECK(bitwise_equal(ua, values(b)));
  CHECK(count_equal(ua, values(c)) < 5);
  CHECK(count_equal(ua, values(d)) < 5);

  // A float model starts from the double model's weights, rounded.
  dchag::View2<double, Space> ref("ref", 17, 23);
  dchag::truncated_normal(ref, 7, 3, 0.02);
  const auto vr = values(ref);
  std::vector<double> rounded;
  for (double x : vr) rounded.push_back(double(T(x)));
  CHECK(bitwise_equal(va, rounded));
}
TEST_CASE_TEMPLATE_APPLY(init_reproducible, AllCases);

TEST_CASE_TEMPLATE_DEFINE("init: a slice generated with its offset equals that part of the "
                          "full tensor",
                          C, init_slices) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const std::size_t rows = 8, cols = 37;
  const std::uint64_t seed = 11, stream = dchag::stream_id("blocks.0.mlp.fc2.weight");
  for (int kind = 0; kind < 2; ++kind) {
    CAPTURE(kind);
    auto fill = [&](const auto& v, auto where) {
      if (kind == 0) dchag::truncated_normal(v, seed, stream, 0.5, -0.8, 1.0, where);
      if (kind == 1) dchag::uniform(v, seed, stream, -2.0, 3.0, where);
    };
    dchag::View2<T, Space> full("full", rows, cols);
    fill(full, std::uint64_t(0));
    const auto vf = values(full);

    // Rows [3, 6): a contiguous range, addressed by a flat offset.
    dchag::View2<T, Space> block("block", 3, cols);
    fill(block, std::uint64_t(3 * cols));
    CHECK(bitwise_equal(values(block),
                        std::vector<double>(vf.begin() + 3 * cols, vf.begin() + 6 * cols)));

    // An arbitrary flat range of a 1-D tensor of the same logical size.
    dchag::View1<T, Space> piece("piece", 50);
    fill(piece, std::uint64_t(101));
    CHECK(bitwise_equal(values(piece), std::vector<double>(vf.begin() + 101, vf.begin() + 151)));

    // Columns [12, 22) of every row: what a row-parallel rank owns.
    std::vector<double> expected;
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 12; j < 22; ++j) expected.push_back(vf[i * cols + j]);
    dchag::View2<T, Space> column_block("column_block", rows, 10);
    fill(column_block, dchag::LogicalSlice{{rows, cols}, {0, 12}});
    CHECK(bitwise_equal(values(column_block), expected));

    // The same columns written into a strided subview of a bigger buffer.
    dchag::View2<T, Space> buffer("buffer", rows, 30);
    auto strided = Kokkos::subview(buffer, Kokkos::ALL, std::make_pair(5, 15));
    fill(strided, dchag::LogicalSlice{{rows, cols}, {0, 12}});
    CHECK(bitwise_equal(values(strided), expected));

    // A box of a 3-D tensor against the same tensor generated whole.
    dchag::View3<T, Space> full3("full3", 4, 5, 6), box("box", 2, 3, 4);
    fill(full3, std::uint64_t(0));
    fill(box, dchag::LogicalSlice{{4, 5, 6}, {1, 2, 1}});
    const auto v3 = values(full3);
    std::vector<double> expected3;
    for (std::size_t i = 1; i < 3; ++i)
      for (std::size_t j = 2; j < 5; ++j)
        for (std::size_t k = 1; k < 5; ++k) expected3.push_back(v3[(i * 5 + j) * 6 + k]);
    CHECK(bitwise_equal(values(box), expected3));
  }
}
TEST_CASE_TEMPLATE_APPLY(init_slices, AllCases);

TEST_CASE_TEMPLATE_DEFINE("truncated_normal: bounds, moments and distribution", C, tn_stats) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const std::size_t n = 200000;
  const double sigma = 0.02;
  dchag::View1<T, Space> v("v", n);

  // The default is timm's trunc_normal_(std=0.02, a=-2, b=2): absolute bounds, 100 sigma away,
  // so the values are a normal of std 0.02 for all practical purposes (as in ClimaX).
  dchag::truncated_normal(v, 1, 2, sigma);
  auto x = values(v);
  Moments m = moments(x);
  CHECK(m.min >= -2.0);
  CHECK(m.max <= 2.0);
  CHECK(std::abs(m.mean) < 0.012 * sigma);  // 5 standard errors
  CHECK(m.stddev == doctest::Approx(sigma).epsilon(0.01));
  // Beyond 2 sigma: 4.55% of a normal; a cut there would leave none.
  const auto beyond = std::count_if(x.begin(), x.end(),
                                    [&](double t) { return std::abs(t) > 2 * sigma; });
  CHECK(double(beyond) / double(n) == doctest::Approx(2 * normal_cdf(-2)).epsilon(0.05));
  CHECK(std::max(-m.min, m.max) > 4 * sigma);  // ~13 of 200000 lie beyond 4 sigma
  auto cdf = [&](double a, double b) {
    return [=](double t) {
      return (normal_cdf(t / sigma) - normal_cdf(a)) / (normal_cdf(b) - normal_cdf(a));
    };
  };
  CHECK(ks_distance(x, cdf(-2 / sigma, 2 / sigma)) < 1.95 / std::sqrt(double(n)));

  // A cut at +-2 sigma (bounds given explicitly). Analytic std: sigma * 0.8796.
  dchag::truncated_normal(v, 1, 2, sigma, -2 * sigma, 2 * sigma);
  x = values(v);
  m = moments(x);
  CHECK(m.min >= double(T(-2 * sigma)));
  CHECK(m.max <= double(T(2 * sigma)));
  CHECK(m.min < -1.95 * sigma);  // the whole interval is used
  CHECK(m.max > 1.95 * sigma);
  const double mass = normal_cdf(2) - normal_cdf(-2);
  const double analytic_std = sigma * std::sqrt(1.0 - 2.0 * 2.0 * normal_pdf(2) / mass);
  CHECK(analytic_std / sigma == doctest::Approx(0.8796).epsilon(1e-4));
  CHECK(std::abs(m.mean) < 0.01 * sigma);  // 5 standard errors
  CHECK(m.stddev == doctest::Approx(analytic_std).epsilon(0.01));
  CHECK(ks_distance(x, cdf(-2, 2)) < 1.95 / std::sqrt(double(n)));  // KS at the 0.1% level

  // An asymmetric cut [-1 sigma, 3 sigma]: mean sigma (phi(a) - phi(b)) / Z.
  dchag::truncated_normal(v, 1, 3, sigma, -sigma, 3 * sigma);
  x = values(v);
  m = moments(x);
  CHECK(m.min >= double(T(-sigma)));
  CHECK(m.max <= double(T(3 * sigma)));
  const double z = normal_cdf(3) - normal_cdf(-1);
  CHECK(std::abs(m.mean - sigma * (normal_pdf(-1) - normal_pdf(3)) / z) < 0.01 * sigma);
  CHECK(ks_distance(x, cdf(-1, 3)) < 1.95 / std::sqrt(double(n)));
}
TEST_CASE_TEMPLATE_APPLY(tn_stats, AllCases);

TEST_CASE_TEMPLATE_DEFINE("uniform and constant", C, uniform_constant) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const std::size_t n = 200000;
  const double lo = -0.3, hi = 0.5;
  dchag::View1<T, Space> v("v", n);
  dchag::uniform(v, 5, 6, lo, hi);
  const auto x = values(v);
  const Moments m = moments(x);
  CHECK(m.min >= double(T(lo)));
  CHECK(m.max <= double(T(hi)));
  CHECK(std::abs(m.mean - (lo + hi) / 2) < 5 * (hi - lo) / std::sqrt(12.0 * double(n)));
  CHECK(m.stddev == doctest::Approx((hi - lo) / std::sqrt(12.0)).epsilon(0.01));
  const auto uniform_cdf = [&](double t) { return (t - lo) / (hi - lo); };
  CHECK(ks_distance(x, uniform_cdf) < 1.95 / std::sqrt(double(n)));

  dchag::View2<T, Space> c("c", 3, 4);
  dchag::constant(c, 0.25);
  for (double e : values(c)) CHECK(e == 0.25);
}
TEST_CASE_TEMPLATE_APPLY(uniform_constant, AllCases);

TEST_CASE_TEMPLATE_DEFINE("sincos_1d matches the formula", C, sincos1) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const std::size_t n = 48, dim = 20;
  dchag::View2<T, Space> v("var_embed", n, dim);
  dchag::sincos_1d(v);
  const auto x = values(v);
  for (std::size_t p = 0; p < n; ++p)
    for (std::size_t k = 0; k < dim; ++k) {
      CAPTURE(p);
      CAPTURE(k);
      CHECK(std::abs(x[p * dim + k] - sincos_reference(dim, k, double(p))) < tol<T>());
    }
  // Position 0: sin 0 = 0 and cos 0 = 1 in every frequency; frequency 0 has omega = 1 exactly.
  for (std::size_t k = 0; k < dim; ++k) CHECK(x[k] == (k < dim / 2 ? 0.0 : 1.0));
  for (std::size_t p = 0; p < n; ++p) {
    CHECK(x[p * dim] == double(T(std::sin(double(p)))));
    CHECK(x[p * dim + dim / 2] == double(T(std::cos(double(p)))));
  }
  // Channels [10, 30) owned by one rank.
  dchag::View2<T, Space> part("part", 20, dim);
  dchag::sincos_1d(part, 10);
  CHECK(bitwise_equal(values(part),
                      std::vector<double>(x.begin() + 10 * dim, x.begin() + 30 * dim)));

  dchag::View2<T, Space> odd("odd", 4, 5);
  CHECK_THROWS_AS(dchag::sincos_1d(odd), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(sincos1, AllCases);

TEST_CASE_TEMPLATE_DEFINE("sincos_2d follows MAE's grid ordering", C, sincos2) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const std::size_t h = 3, w = 5, dim = 16, half = dim / 2;  // h != w: a swapped axis shows
  dchag::View2<T, Space> v("pos_embed", h * w, dim);
  dchag::sincos_2d(v, h, w);
  const auto x = values(v);
  // MAE: grid = meshgrid(grid_w, grid_h); emb = [1d(D/2, grid[0]) | 1d(D/2, grid[1])], i.e. the
  // first half encodes the column (w) index of patch l = row * w + col, the second half its row.
  for (std::size_t row = 0; row < h; ++row)
    for (std::size_t col = 0; col < w; ++col)
      for (std::size_t k = 0; k < dim; ++k) {
        const std::size_t l = row * w + col;
        const double ref = k < half ? sincos_reference(half, k, double(col))
                                    : sincos_reference(half, k - half, double(row));
        CAPTURE(l);
        CAPTURE(k);
        CHECK(std::abs(x[l * dim + k] - ref) < tol<T>());
      }
  const std::size_t quarter = dim / 4;
  // Patch (0, 1): row 0, so the second half is exactly [0 ... 0 | 1 ... 1]; first half sin(1).
  for (std::size_t k = 0; k < half; ++k) CHECK(x[1 * dim + half + k] == (k < quarter ? 0.0 : 1.0));
  CHECK(x[1 * dim] == double(T(std::sin(1.0))));
  CHECK(x[1 * dim + quarter] == double(T(std::cos(1.0))));
  // Patch (1, 0): column 0, so the first half is exact; the second half starts with sin(1).
  for (std::size_t k = 0; k < half; ++k) CHECK(x[w * dim + k] == (k < quarter ? 0.0 : 1.0));
  CHECK(x[w * dim + half] == double(T(std::sin(1.0))));

  dchag::View2<T, Space> not4("not4", h * w, 10), wrong_rows("wrong_rows", h * w + 1, dim);
  CHECK_THROWS_AS(dchag::sincos_2d(not4, h, w), dchag::Error);  // even but not a multiple of 4
  CHECK_THROWS_AS(dchag::sincos_2d(wrong_rows, h, w), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(sincos2, AllCases);

TEST_CASE("init: bad arguments throw dchag::Error") {
  Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace> v("v", 4, 6);
  CHECK_THROWS_AS(dchag::truncated_normal(v, 1, 1, 0.0), dchag::Error);
  CHECK_THROWS_AS(dchag::truncated_normal(v, 1, 1, -0.02), dchag::Error);
  CHECK_THROWS_AS(dchag::truncated_normal(v, 1, 1, 0.02, 0.1, 0.1), dchag::Error);
  CHECK_THROWS_AS(dchag::truncated_normal(v, 1, 1, 0.02, 0.1, -0.1), dchag::Error);
  // [5 sigma, 6 sigma] holds 3e-7 of the mass: rejection would never finish.
  CHECK_THROWS_AS(dchag::truncated_normal(v, 1, 1, 1.0, 5.0, 6.0), dchag::Error);
  CHECK_NOTHROW(dchag::truncated_normal(v, 1, 1, 1.0, 2.0, 3.0));  // 2% of the mass: fine
  CHECK_THROWS_AS(dchag::uniform(v, 1, 1, 1.0, -1.0), dchag::Error);
  CHECK_THROWS_AS(dchag::uniform(v, 1, 1, 0.0, INFINITY), dchag::Error);
  // Slices: wrong rank, and a box that leaves the tensor.
  CHECK_THROWS_AS(dchag::uniform(v, 1, 1, 0.0, 1.0, dchag::LogicalSlice{{24}, {0}}), dchag::Error);
  CHECK_THROWS_AS(dchag::uniform(v, 1, 1, 0.0, 1.0, dchag::LogicalSlice{{4, 10}, {0, 5}}),
                  dchag::Error);
  CHECK_THROWS_AS(dchag::uniform(v, 1, 1, 0.0, 1.0, dchag::LogicalSlice{{4, 10}, {1, 0}}),
                  dchag::Error);
  CHECK_NOTHROW(dchag::uniform(v, 1, 1, 0.0, 1.0, dchag::LogicalSlice{{4, 10}, {0, 4}}));
  try {
    dchag::sincos_2d(v, 2, 2);
    FAIL("no exception");
  } catch (const dchag::Error& e) {
    CHECK(std::string(e.what()).find("multiple of 4") != std::string::npos);
  }
}
