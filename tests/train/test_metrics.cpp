#include <dchag/train/climatology.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/metrics.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

std::vector<double> grid_latitudes(int H) {
  std::vector<double> lat(H);
  for (int h = 0; h < H; ++h) lat[h] = -90.0 + (h + 0.5) * 180.0 / H;
  return lat;
}

Eigen::ArrayXXd weight_array(const std::vector<double>& lat, int W) {
  Eigen::ArrayXd w(lat.size());
  for (std::size_t i = 0; i < lat.size(); ++i) w(i) = std::cos(lat[i] * M_PI / 180.0);
  w /= w.mean();
  return w.replicate(1, W);
}

// Image (b, c) of a host view [B, C, H, W] (or clim (c) of [C, H, W]) as an H x W array.
template <class V>
Eigen::ArrayXXd image(const V& v, std::size_t b, std::size_t c) {
  const std::size_t H = v.extent(2), W = v.extent(3);
  Eigen::ArrayXXd a(H, W);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t x = 0; x < W; ++x) a(h, x) = double(v(b, c, h, x));
  return a;
}
template <class V>
Eigen::ArrayXXd field(const V& v, std::size_t c) {
  const std::size_t H = v.extent(1), W = v.extent(2);
  Eigen::ArrayXXd a(H, W);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t x = 0; x < W; ++x) a(h, x) = double(v(c, h, x));
  return a;
}

// The definition, sample by sample, in Eigen arrays.
struct Reference {
  std::vector<double> rmse, acc;
};
template <class P, class Y, class K>
Reference reference_skill(const P& pred, const Y& target, const K& clim,
                          const std::vector<double>& lat) {
  auto p = to_host(pred);
  auto y = to_host(target);
  auto k = to_host(clim);
  const std::size_t B = p.extent(0), C = p.extent(1), W = p.extent(3);
  const Eigen::ArrayXXd w = weight_array(lat, int(W));
  Reference r{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t b = 0; b < B; ++b) {
      const Eigen::ArrayXXd pi = image(p, b, c), yi = image(y, b, c), ki = field(k, c);
      r.rmse[c] += std::sqrt((w * (pi - yi).square()).mean()) / B;
      Eigen::ArrayXXd ap = pi - ki, ay = yi - ki;
      ap -= ap.mean();
      ay -= ay.mean();
      const double den = std::sqrt((w * ap.square()).sum() * (w * ay.square()).sum());
      r.acc[c] += (den > 0 ? (w * ap * ay).sum() / den : 0.0) / B;
    }
  return r;
}

// Targets with a shared pattern in pred and target, so that the ACC is far from 0 and from 1.
template <class V4, class V3>
void fill_forecast(const V4& pred, const V4& target, const V3& clim, unsigned seed) {
  fill_random(clim, seed, -1.0, 1.0);
  fill_random(target, seed + 1, -2.0, 2.0);
  fill_random(pred, seed + 2, -1.0, 1.0);
  auto p = to_host(pred);
  auto t = to_host(target);
  for (std::size_t i = 0; i < p.span(); ++i) p.data()[i] += 0.8 * t.data()[i];
  Kokkos::deep_copy(pred, p);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("lat_weighted_acc and ForecastSkill match an Eigen reference", C,
                          skill_ref) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 3, Cv = 4, H = 6, W = 8;
  const auto lat = grid_latitudes(H);
  auto w = dchag::latitude_weights<T, Space>(lat);
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W);
  dchag::View3<T, Space> clim("clim", Cv, H, W);
  fill_forecast(pred, target, clim, 11);
  const Reference ref = reference_skill(pred, target, clim, lat);

  const auto acc = dchag::lat_weighted_acc(space, pred, target, clim, w);
  dchag::ForecastSkill skill(Cv);
  skill.add(space, pred, target, clim, w);
  CHECK(skill.samples() == B);
  const auto rmse = skill.rmse(), acc2 = skill.acc();
  const auto rmse_loss = dchag::lat_weighted_rmse(space, pred, target, w);
  for (int c = 0; c < Cv; ++c) {
    CHECK(acc[c] == doctest::Approx(ref.acc[c]).epsilon(tol<T>()));
    CHECK(acc2[c] == doctest::Approx(ref.acc[c]).epsilon(tol<T>()));
    CHECK(rmse[c] == doctest::Approx(ref.rmse[c]).epsilon(tol<T>()));
    CHECK(rmse[c] == doctest::Approx(rmse_loss[c]).epsilon(1e-12));
    CHECK(ref.acc[c] > 0.2);
    CHECK(ref.acc[c] < 0.95);
  }
}
TEST_CASE_TEMPLATE_APPLY(skill_ref, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ForecastSkill: the parts of a split batch sum to the whole", C,
                          skill_parts) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 5, Cv = 3, H = 4, W = 6;
  auto w = dchag::latitude_weights<T, Space>(grid_latitudes(H));
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W);
  dchag::View3<T, Space> clim("clim", Cv, H, W);
  fill_forecast(pred, target, clim, 21);

  dchag::ForecastSkill whole(Cv);
  whole.add(space, pred, target, clim, w);
  // Samples [0, 2) on one "data rank", [2, 5) on another, the second in two batches.
  auto part = [&](int b0, int b1) {
    const auto r = Kokkos::make_pair(b0, b1);
    return std::make_pair(Kokkos::subview(pred, r, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL),
                          Kokkos::subview(target, r, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL));
  };
  dchag::ForecastSkill first(Cv), second(Cv);
  const auto a = part(0, 2), b = part(2, 3), c = part(3, 5);
  first.add(space, a.first, a.second, clim, w);
  second.add(space, b.first, b.second, clim, w);
  second.add(space, c.first, c.second, clim, w);
  first.merge(second);
  // A communicator of one rank leaves the sums as they are.
  first.all_reduce(dchag::Communicator(MPI_COMM_SELF));
  CHECK(first.samples() == B);
  for (int v = 0; v < Cv; ++v) {
    CHECK(first.rmse()[v] == doctest::Approx(whole.rmse()[v]).epsilon(1e-13));
    CHECK(first.acc()[v] == doctest::Approx(whole.acc()[v]).epsilon(1e-13));
  }
  CHECK_THROWS_WITH_AS(first.add(space, pred, target, clim, w),
                       doctest::Contains("already summed"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(skill_parts, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ACC of the exact, the negated and the climatology forecast", C,
                          acc_cases) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, Cv = 2, H = 5, W = 6;
  auto w = dchag::latitude_weights<T, Space>(grid_latitudes(H));
  dchag::View4<T, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W);
  dchag::View3<T, Space> clim("clim", Cv, H, W);
  fill_forecast(pred, target, clim, 31);

  Kokkos::deep_copy(pred, target);
  for (double v : dchag::lat_weighted_acc(space, pred, target, clim, w))
    CHECK(v == doctest::Approx(1.0).epsilon(tol<T>()));
  {
    dchag::ForecastSkill s(Cv);
    s.add(space, pred, target, clim, w);
    for (double v : s.rmse()) CHECK(v == 0.0);
  }
  // Anomaly -a (mirrored about the climatology) correlates at -1.
  auto hp = to_host(pred);
  auto ht = to_host(target);
  auto hk = to_host(clim);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Cv; ++c)
      for (int h = 0; h < H; ++h)
        for (int x = 0; x < W; ++x)
          hp(b, c, h, x) = T(2) * hk(c, h, x) - ht(b, c, h, x);
  Kokkos::deep_copy(pred, hp);
  for (double v : dchag::lat_weighted_acc(space, pred, target, clim, w))
    CHECK(v == doctest::Approx(-1.0).epsilon(tol<T>()));
  // The climatology forecast has no anomaly: ACC 0 by definition, not NaN.
  dchag::climatology_forecast(space, pred, clim);
  for (double v : dchag::lat_weighted_acc(space, pred, target, clim, w)) CHECK(v == 0.0);
}
TEST_CASE_TEMPLATE_APPLY(acc_cases, AllCases);

TEST_CASE("ACC does not change under a per-variable affine map (physical units)") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const int B = 2, Cv = 2, H = 4, W = 5;
  auto w = dchag::latitude_weights<double, Space>(grid_latitudes(H));
  dchag::View4<double, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W);
  dchag::View3<double, Space> clim("clim", Cv, H, W);
  fill_forecast(pred, target, clim, 41);
  const auto acc = dchag::lat_weighted_acc(space, pred, target, clim, w);
  dchag::ForecastSkill norm(Cv);
  norm.add(space, pred, target, clim, w);
  const double scale[2] = {3.5, 0.02}, offset[2] = {280.0, -7.0};
  auto hp = to_host(pred);
  auto ht = to_host(target);
  auto hk = to_host(clim);
  for (int c = 0; c < Cv; ++c)
    for (int h = 0; h < H; ++h)
      for (int x = 0; x < W; ++x) {
        hk(c, h, x) = offset[c] + scale[c] * hk(c, h, x);
        for (int b = 0; b < B; ++b) {
          hp(b, c, h, x) = offset[c] + scale[c] * hp(b, c, h, x);
          ht(b, c, h, x) = offset[c] + scale[c] * ht(b, c, h, x);
        }
      }
  Kokkos::deep_copy(pred, hp);
  Kokkos::deep_copy(target, ht);
  Kokkos::deep_copy(clim, hk);
  const auto phys = dchag::lat_weighted_acc(space, pred, target, clim, w);
  dchag::ForecastSkill raw(Cv);
  raw.add(space, pred, target, clim, w);
  for (int c = 0; c < Cv; ++c) {
    CHECK(phys[c] == doctest::Approx(acc[c]).epsilon(1e-10));
    CHECK(raw.rmse()[c] == doctest::Approx(scale[c] * norm.rmse()[c]).epsilon(1e-10));
  }
}

TEST_CASE("forecast skill refuses bad input") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const int B = 2, Cv = 3, H = 4, W = 5;
  auto w = dchag::latitude_weights<double, Space>(grid_latitudes(H));
  dchag::View4<double, Space> pred("pred", B, Cv, H, W), target("target", B, Cv, H, W),
      other("other", B, Cv, H, W + 1);
  dchag::View3<double, Space> clim("clim", Cv, H, W), bad_clim("bad_clim", Cv - 1, H, W);
  fill_forecast(pred, target, clim, 51);
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_acc(space, pred, target, bad_clim, w),
                       doctest::Contains("climatology"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_acc(space, pred, other, clim, w),
                       doctest::Contains("shape"), dchag::Error);
  dchag::ForecastSkill skill(Cv + 1);
  CHECK_THROWS_WITH_AS(skill.add(space, pred, target, clim, w),
                       doctest::Contains("output variables"), dchag::Error);
  CHECK_THROWS_WITH_AS(skill.rmse(), doctest::Contains("no samples"), dchag::Error);
  CHECK_THROWS_WITH_AS(skill.acc(), doctest::Contains("no samples"), dchag::Error);
  CHECK_THROWS_AS(dchag::ForecastSkill(0), dchag::Error);

  auto hp = to_host(pred);
  hp(1, 2, 3, 4) = std::numeric_limits<double>::quiet_NaN();
  Kokkos::deep_copy(pred, hp);
  CHECK_THROWS_WITH_AS(dchag::lat_weighted_acc(space, pred, target, clim, w),
                       doctest::Contains("not finite"), dchag::Error);
  dchag::ForecastSkill right(Cv);
  CHECK_THROWS_WITH_AS(right.add(space, pred, target, clim, w),
                       doctest::Contains("not finite"), dchag::Error);
}

TEST_CASE_TEMPLATE_DEFINE("Climatology is the mean state, accumulated in parts", C, clim_mean) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 5, Cv = 2, H = 3, W = 4;
  dchag::View4<T, Space> x("x", B, Cv, H, W);
  fill_random(x, 61, -3.0, 5.0);
  auto hx = to_host(x);

  dchag::Climatology<Space> clim(Cv, H, W);
  clim.add(space, Kokkos::subview(x, Kokkos::make_pair(0, 2), Kokkos::ALL, Kokkos::ALL,
                                  Kokkos::ALL));
  clim.add(space, Kokkos::subview(x, Kokkos::make_pair(2, 5), Kokkos::ALL, Kokkos::ALL,
                                  Kokkos::ALL));
  clim.all_reduce(space, dchag::Communicator(MPI_COMM_SELF));
  CHECK(clim.samples() == B);
  const auto mean = to_host(clim.template mean<T>(space));
  for (int c = 0; c < Cv; ++c)
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < W; ++k) {
        double ref = 0;
        for (int b = 0; b < B; ++b) ref += double(hx(b, c, h, k)) / B;
        CHECK(double(mean(c, h, k)) == doctest::Approx(ref).epsilon(tol<T>()));
      }

  // The climatology forecast repeats it for every sample.
  dchag::View4<T, Space> forecast("forecast", 3, Cv, H, W);
  dchag::climatology_forecast(space, forecast, clim.template mean<T>(space));
  const auto hf = to_host(forecast);
  for (int b = 0; b < 3; ++b) CHECK(hf(b, 1, 2, 3) == mean(1, 2, 3));
}
TEST_CASE_TEMPLATE_APPLY(clim_mean, AllCases);

TEST_CASE("Climatology refuses bad input") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  CHECK_THROWS_AS(dchag::Climatology<Space>(0, 2, 2), dchag::Error);
  dchag::Climatology<Space> clim(2, 3, 4);
  CHECK_THROWS_WITH_AS(clim.mean<float>(space), doctest::Contains("no states"), dchag::Error);
  dchag::View4<float, Space> wrong("wrong", 1, 3, 3, 4);
  CHECK_THROWS_WITH_AS(clim.add(space, wrong), doctest::Contains("must be [B, 2, 3, 4]"),
                       dchag::Error);
  dchag::View4<float, Space> forecast("forecast", 1, 2, 3, 5);
  dchag::View3<float, Space> mean("mean", 2, 3, 4);
  CHECK_THROWS_WITH_AS(dchag::climatology_forecast(space, forecast, mean),
                       doctest::Contains("does not match"), dchag::Error);
}
