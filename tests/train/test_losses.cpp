#include <dchag/train/losses.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

std::vector<double> test_latitudes(int H) {
  // Cell centres of a regular grid that avoids the poles, as ERA5 at 5.625 degrees.
  std::vector<double> lat(H);
  for (int h = 0; h < H; ++h) lat[h] = -90.0 + (h + 0.5) * 180.0 / H;
  return lat;
}

std::vector<double> reference_weights(const std::vector<double>& lat) {
  std::vector<double> w(lat.size());
  double mean = 0;
  for (std::size_t i = 0; i < lat.size(); ++i) {
    w[i] = std::cos(lat[i] * M_PI / 180.0);
    mean += w[i] / lat.size();
  }
  for (auto& x : w) x /= mean;
  return w;
}

// References computed from the (possibly float) inputs in double, by plain loops.
template <class V>
double ref_lat_mse(const V& pred, const V& target, const std::vector<double>& w) {
  auto p = to_host(pred);
  auto t = to_host(target);
  double s = 0;
  for (std::size_t b = 0; b < p.extent(0); ++b)
    for (std::size_t c = 0; c < p.extent(1); ++c)
      for (std::size_t h = 0; h < p.extent(2); ++h)
        for (std::size_t x = 0; x < p.extent(3); ++x) {
          const double d = double(p(b, c, h, x)) - double(t(b, c, h, x));
          s += w[h] * d * d;
        }
  return s / p.size();
}

template <class V>
std::vector<double> ref_lat_rmse(const V& pred, const V& target, const std::vector<double>& w) {
  auto p = to_host(pred);
  auto t = to_host(target);
  const std::size_t B = p.extent(0), C = p.extent(1), H = p.extent(2), W = p.extent(3);
  std::vector<double> r(C, 0.0);
  for (std::size_t c = 0; c < C; ++c) {
    for (std::size_t b = 0; b < B; ++b) {
      double s = 0;
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t x = 0; x < W; ++x) {
          const double d = double(p(b, c, h, x)) - double(t(b, c, h, x));
          s += w[h] * d * d;
        }
      r[c] += std::sqrt(s / (H * W)) / B;
    }
  }
  return r;
}

template <class V, class M>
double ref_masked_mse(const V& pred, const V& target, const M& mask) {
  auto p = to_host(pred);
  auto t = to_host(target);
  auto m = to_host(mask);
  double num = 0, den = 0;
  for (std::size_t b = 0; b < p.extent(0); ++b)
    for (std::size_t l = 0; l < p.extent(1); ++l) {
      double patch = 0;
      for (std::size_t k = 0; k < p.extent(2); ++k) {
        const double d = double(p(b, l, k)) - double(t(b, l, k));
        patch += d * d;
      }
      num += double(m(b, l)) * patch / p.extent(2);
      den += double(m(b, l));
    }
  return num / den;
}

// A 0/1 mask with about 3/4 of the patches masked, as MAE's 75% masking ratio.
template <class M>
void fill_mask(const M& mask, unsigned seed) {
  auto h = Kokkos::create_mirror_view(mask);
  std::mt19937 gen(seed);
  for (std::size_t b = 0; b < h.extent(0); ++b)
    for (std::size_t l = 0; l < h.extent(1); ++l) h(b, l) = (gen() % 4 != 0) ? 1 : 0;
  h(0, 0) = 0;  // at least one kept and one masked patch
  h(0, 1) = 1;
  Kokkos::deep_copy(mask, h);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("latitude weights are cos(lat) normalised to mean 1", C, lat_w) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const auto lat = test_latitudes(8);
  auto w = dchag::latitude_weights<T, Space>(lat);
  REQUIRE(w.extent(0) == 8);
  const auto ref = reference_weights(lat);
  auto h = to_host(w);
  double mean = 0;
  for (int i = 0; i < 8; ++i) {
    CHECK(double(h(i)) == doctest::Approx(ref[i]).epsilon(tol<T>()));
    mean += double(h(i)) / 8;
  }
  CHECK(mean == doctest::Approx(1.0).epsilon(tol<T>()));
  // Symmetric grid: symmetric weights, largest at the equator.
  CHECK(double(h(0)) == doctest::Approx(double(h(7))));
  CHECK(h(3) > h(0));
}
TEST_CASE_TEMPLATE_APPLY(lat_w, AllCases);

TEST_CASE("latitude weights refuse bad latitudes") {
  using Space = Kokkos::DefaultExecutionSpace;
  auto weights = [](std::vector<double> lat) {
    return dchag::latitude_weights<double, Space>(lat);
  };
  CHECK_THROWS_WITH_AS(weights({}), doctest::Contains("no latitudes"), dchag::Error);
  CHECK_THROWS_WITH_AS(weights({0.0, 95.0}), doctest::Contains("[-90, 90]"), dchag::Error);
  CHECK_THROWS_WITH_AS(weights({0.0, std::nan("")}), doctest::Contains("[-90, 90]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(weights({90.0, -90.0}), doctest::Contains("poles"), dchag::Error);
}

TEST_CASE_TEMPLATE_DEFINE("lat_weighted_mse matches a loop reference", C, lat_mse) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, Cv = 3, H = 4, W = 5;
  const auto lat = test_latitudes(H);
  const auto wref = reference_weights(lat);
  auto w = dchag::latitude_weights<T, Space>(lat);
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W),
      dpred("dpred", B, Cv, H, W);
  fill_random(pred, 1);
  fill_random(target, 2);
  const double loss = dchag::lat_weighted_mse(space, pred, target, w, dpred);
  CHECK(loss == doctest::Approx(ref_lat_mse(pred, target, wref)).epsilon(tol<T>()));

  // dL/dpred = 2 w(h) (pred - target) / N.
  auto hp = to_host(pred);
  auto ht = to_host(target);
  auto hd = to_host(dpred);
  const double n = B * Cv * H * W;
  double worst = 0, scale = 0;
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Cv; ++c)
      for (int h = 0; h < H; ++h)
        for (int x = 0; x < W; ++x) {
          const double ref = 2 * wref[h] * (double(hp(b, c, h, x)) - double(ht(b, c, h, x))) / n;
          worst = std::max(worst, std::abs(double(hd(b, c, h, x)) - ref));
          scale = std::max(scale, std::abs(ref));
        }
  CHECK(worst / scale < tol<T>());

  // Const views are accepted, and dpred is overwritten rather than accumulated.
  Kokkos::View<const T****, Kokkos::LayoutRight, typename Space::memory_space> cp = pred;
  const double again = dchag::lat_weighted_mse(space, cp, target, w, dpred);
  CHECK(again == loss);
  CHECK(double(to_host(dpred)(1, 2, 3, 4)) == double(hd(1, 2, 3, 4)));
}
TEST_CASE_TEMPLATE_APPLY(lat_mse, AllCases);

TEST_CASE_TEMPLATE_DEFINE("lat_weighted_mse gradient matches finite differences", C,
                          lat_mse_fd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, Cv = 3, H = 6, W = 4;
  auto w = dchag::latitude_weights<T, Space>(test_latitudes(H));
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W),
      dpred("dpred", B, Cv, H, W), scratch("scratch", B, Cv, H, W);
  fill_random(pred, 3);
  fill_random(target, 4);
  dchag::lat_weighted_mse(space, pred, target, w, dpred);
  auto loss = [&] { return dchag::lat_weighted_mse(space, pred, target, w, scratch); };
  CHECK(gradient_error(pred, dpred, loss, 48) < 1e-7);
}
TEST_CASE_TEMPLATE_APPLY(lat_mse_fd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("lat_weighted_rmse matches a loop reference", C, lat_rmse) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 3, Cv = 4, H = 6, W = 7;
  const auto lat = test_latitudes(H);
  const auto wref = reference_weights(lat);
  auto w = dchag::latitude_weights<T, Space>(lat);
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W);
  fill_random(pred, 5, -2.0, 2.0);
  fill_random(target, 6);
  const auto rmse = dchag::lat_weighted_rmse(space, pred, target, w);
  const auto ref = ref_lat_rmse(pred, target, wref);
  REQUIRE(rmse.size() == std::size_t(Cv));
  for (int c = 0; c < Cv; ++c) CHECK(rmse[c] == doctest::Approx(ref[c]).epsilon(tol<T>()));

  // A constant error e on every pixel gives |e| (the weights have mean 1).
  Kokkos::deep_copy(pred, T(1.5));
  Kokkos::deep_copy(target, T(-0.5));
  for (double r : dchag::lat_weighted_rmse(space, pred, target, w))
    CHECK(r == doctest::Approx(2.0).epsilon(tol<T>()));
}
TEST_CASE_TEMPLATE_APPLY(lat_rmse, AllCases);

TEST_CASE_TEMPLATE_DEFINE("masked_mse matches MAE's loss", C, masked) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 3, L = 8, P = 5;
  dchag::View3<T, Space> pred("pred", B, L, P), target("target", B, L, P), dpred("dpred", B, L, P);
  dchag::View2<T, Space> mask("mask", B, L);
  fill_random(pred, 7);
  fill_random(target, 8);
  fill_mask(mask, 9);
  Kokkos::deep_copy(dpred, T(42));  // overwritten, kept patches included
  const double loss = dchag::masked_mse(space, pred, target, mask, dpred);
  CHECK(loss == doctest::Approx(ref_masked_mse(pred, target, mask)).epsilon(tol<T>()));

  auto hp = to_host(pred);
  auto ht = to_host(target);
  auto hm = to_host(mask);
  auto hd = to_host(dpred);
  double masked = 0;
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) masked += double(hm(b, l));
  double worst = 0, scale = 0;
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l)
      for (int k = 0; k < P; ++k) {
        const double ref =
            2 * double(hm(b, l)) * (double(hp(b, l, k)) - double(ht(b, l, k))) / (P * masked);
        if (hm(b, l) == T(0)) CHECK(hd(b, l, k) == T(0));
        worst = std::max(worst, std::abs(double(hd(b, l, k)) - ref));
        scale = std::max(scale, std::abs(ref));
      }
  CHECK(worst / scale < tol<T>());

  // Kept patches do not enter the loss at all.
  auto hp2 = to_host(pred);
  hp2(0, 0, 2) += T(100);
  Kokkos::deep_copy(pred, hp2);
  CHECK(dchag::masked_mse(space, pred, target, mask, dpred) == doctest::Approx(loss));
}
TEST_CASE_TEMPLATE_APPLY(masked, AllCases);

TEST_CASE_TEMPLATE_DEFINE("masked_mse gradient matches finite differences", C, masked_fd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, L = 6, P = 4;
  dchag::View3<T, Space> pred("pred", B, L, P), target("target", B, L, P),
      dpred("dpred", B, L, P), scratch("scratch", B, L, P);
  dchag::View2<T, Space> mask("mask", B, L);
  fill_random(pred, 10);
  fill_random(target, 11);
  fill_mask(mask, 12);
  dchag::masked_mse(space, pred, target, mask, dpred);
  auto loss = [&] { return dchag::masked_mse(space, pred, target, mask, scratch); };
  CHECK(gradient_error(pred, dpred, loss, 48) < 1e-7);
}
TEST_CASE_TEMPLATE_APPLY(masked_fd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("losses refuse NaN, Inf and malformed input", C, loss_errors) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T inf = std::numeric_limits<T>::infinity();

  auto w = dchag::latitude_weights<T, Space>(test_latitudes(4));
  dchag::View4<T, Space> pred("pred", 2, 2, 4, 3), target("target", 2, 2, 4, 3),
      dpred("dpred", 2, 2, 4, 3);
  fill_random(pred, 13);
  fill_random(target, 14);
  set_element(pred, 17, double(nan));
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_mse(space, pred, target, w, dpred),
                       doctest::Contains("lat_weighted_mse"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_rmse(space, pred, target, w),
                       doctest::Contains("lat_weighted_rmse"), dchag::Error);
  set_element(pred, 17, 0.5);
  set_element(target, 3, double(inf));
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_mse(space, pred, target, w, dpred),
                       doctest::Contains("NaN or Inf"), dchag::Error);
  set_element(target, 3, 0.5);
  CHECK(std::isfinite(dchag::lat_weighted_mse(space, pred, target, w, dpred)));

  dchag::View4<T, Space> wrong("wrong", 2, 2, 4, 2);
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_mse(space, pred, wrong, w, dpred),
                       doctest::Contains("must have the shape of"), dchag::Error);
  auto w5 = dchag::latitude_weights<T, Space>(test_latitudes(5));
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_rmse(space, pred, target, w5),
                       doctest::Contains("one entry per row"), dchag::Error);

  dchag::View3<T, Space> p3("p3", 2, 4, 3), t3("t3", 2, 4, 3), d3("d3", 2, 4, 3);
  dchag::View2<T, Space> mask("mask", 2, 4);
  fill_random(p3, 15);
  fill_random(t3, 16);
  CHECK_THROWS_WITH_AS(dchag::masked_mse(space, p3, t3, mask, d3),
                       doctest::Contains("all kept"), dchag::Error);
  set_element(mask, 5, 0.5);
  CHECK_THROWS_WITH_AS(dchag::masked_mse(space, p3, t3, mask, d3),
                       doctest::Contains("neither 0 (kept) nor 1 (masked)"), dchag::Error);
  set_element(mask, 5, 1.0);
  CHECK(std::isfinite(dchag::masked_mse(space, p3, t3, mask, d3)));
  // NaN on a kept patch still means a diverged model.
  set_element(p3, 0, double(nan));
  CHECK_THROWS_WITH_AS(dchag::masked_mse(space, p3, t3, mask, d3),
                       doctest::Contains("masked_mse"), dchag::Error);
  dchag::View2<T, Space> mask_wrong("mask_wrong", 2, 3);
  CHECK_THROWS_WITH_AS(dchag::masked_mse(space, p3, t3, mask_wrong, d3),
                       doctest::Contains("must be [B, L]"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(loss_errors, AllCases);
