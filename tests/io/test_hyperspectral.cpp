#include <dchag/io/hyperspectral.hpp>

#include <chrono>
#include <ctime>
#include <functional>
#include <string>

#include "io_stats.hpp"
#include "test_common.hpp"

using dchag::Split;
using namespace io_test;

namespace {

dchag::HyperspectralConfig small_config() {
  dchag::HyperspectralConfig cfg;
  cfg.bands = 97;  // odd, so band slices are uneven
  cfg.height = 16;
  cfg.width = 24;  // not square: patches must still come out right
  cfg.seed = 3;
  return cfg;
}

std::vector<std::size_t> spread(std::size_t count, std::size_t step) {
  std::vector<std::size_t> v(count);
  for (std::size_t i = 0; i < count; ++i) v[i] = 3 + i * step;
  return v;
}

}  // namespace

TEST_CASE_TEMPLATE("HyperspectralGenerator: same seed gives identical data, another seed other data",
                   T, float, double) {
  auto cfg = small_config();
  dchag::HyperspectralGenerator<T> a(cfg), b(cfg);
  const auto xa = a.batch(Split::Train, 4, 3), xb = b.batch(Split::Train, 4, 3);
  CHECK(bitwise_equal(xa, xb));
  cfg.seed = 4;
  dchag::HyperspectralGenerator<T> c(cfg);
  CHECK(max_abs_diff(xa, c.batch(Split::Train, 4, 3)) > 0.5);
  CHECK(max_abs_diff(a.endmember_spectra(), c.endmember_spectra()) > 0.05);
  // Scenes do not depend on the batch they are requested in.
  const auto one = a.batch(Split::Train, std::vector<std::size_t>{5});
  CHECK(std::memcmp(&one(0, 0, 0, 0), &xa(1, 0, 0, 0), one.size() * sizeof(T)) == 0);
}

TEST_CASE_TEMPLATE("HyperspectralGenerator: band ranges are bit-identical to the full batch", T,
                   float, double) {
  for (bool normalize : {true, false}) {
    auto cfg = small_config();
    cfg.normalize = normalize;
    dchag::HyperspectralGenerator<T> gen(cfg);
    const auto full = gen.batch(Split::Test, 2, 3);
    const std::pair<int, int> ranges[] = {{0, 25}, {25, 97}, {48, 49}, {96, 97}, {0, 97}};
    for (auto range : ranges) {
      CAPTURE(range.first);
      CAPTURE(range.second);
      const auto part = gen.batch(Split::Test, 2, 3, range.first, range.second);
      REQUIRE(part.extent(1) == std::size_t(range.second - range.first));
      for (int c = range.first; c < range.second; ++c)
        CHECK(channel_bitwise_equal(full, c, part, c - range.first));
    }
    dchag::View3<T, Kokkos::DefaultHostExecutionSpace> one("one", 10, cfg.height, cfg.width);
    gen.sample(Split::Test, 3, one, 40);
    CHECK(std::memcmp(&one(0, 0, 0), &full(1, 40, 0, 0), one.size() * sizeof(T)) == 0);
  }
}

TEST_CASE("HyperspectralGenerator: abundances are smooth, non-negative and sum to one") {
  auto cfg = small_config();
  dchag::HyperspectralGenerator<double> gen(cfg);
  const int ee = cfg.endmembers;
  double most_dominant = 0.0, mean_roughness = 0.0;
  int maps = 0;
  for (Split split : {Split::Train, Split::Test})
    for (std::size_t index : {0, 1, 77}) {
      const auto a = gen.abundances(split, index);
      REQUIRE(a.extent(0) == std::size_t(ee));
      double worst_sum = 0.0, least = 1.0;
      for (int r = 0; r < cfg.height; ++r)
        for (int j = 0; j < cfg.width; ++j) {
          double sum = 0.0;
          for (int e = 0; e < ee; ++e) {
            sum += a(e, r, j);
            least = std::min(least, a(e, r, j));
            most_dominant = std::max(most_dominant, a(e, r, j));
          }
          worst_sum = std::max(worst_sum, std::abs(sum - 1.0));
        }
      CHECK(worst_sum < 1e-12);
      CHECK(least >= 0.0);
      // Smooth maps: view [E, H, W] as a one-sample [1, E, H, W] batch.
      Kokkos::View<double****, Kokkos::LayoutRight, Kokkos::HostSpace,
                   Kokkos::MemoryTraits<Kokkos::Unmanaged>>
          as_batch(a.data(), 1, ee, cfg.height, cfg.width);
      for (int e = 0; e < ee; ++e)
        if (channel_moments(as_batch, e).std > 0.1) {  // skip near-constant maps
          const double rough = roughness(as_batch, e);
          CHECK(rough < 0.4);
          mean_roughness += rough;
          ++maps;
        }
    }
  REQUIRE(maps > 0);
  CHECK(mean_roughness / maps < 0.15);
  CHECK(most_dominant > 0.8);  // some pixels are nearly pure: the materials form patches
}

TEST_CASE_TEMPLATE("HyperspectralGenerator: cubes are the linear mixture of the endmembers", T,
                   float, double) {
  auto cfg = small_config();
  cfg.noise = 0.0;
  for (bool normalize : {false, true}) {
    cfg.normalize = normalize;
    dchag::HyperspectralGenerator<T> gen(cfg);
    const auto x = gen.batch(Split::Train, 10, 2);
    const auto s = gen.endmember_spectra();
    double err = 0.0;
    for (std::size_t b = 0; b < 2; ++b) {
      const auto a = gen.abundances(Split::Train, 10 + b);
      for (int c = 0; c < cfg.bands; ++c)
        for (int r = 0; r < cfg.height; ++r)
          for (int j = 0; j < cfg.width; ++j) {
            double mix = 0.0;
            for (int e = 0; e < cfg.endmembers; ++e) mix += double(s(e, c)) * double(a(e, r, j));
            double v = x(b, c, r, j);
            if (normalize) v = v * gen.band_std()[c] + gen.band_mean()[c];
            err = std::max(err, std::abs(v - mix));
          }
    }
    CAPTURE(normalize);
    CHECK(err < (std::is_same<T, float>::value ? 1e-5 : 1e-12));
  }
}

TEST_CASE("HyperspectralGenerator: noise has the configured size") {
  auto cfg = small_config();
  cfg.noise = 0.1;
  cfg.normalize = false;
  dchag::HyperspectralGenerator<double> noisy(cfg);
  cfg.noise = 0.0;
  dchag::HyperspectralGenerator<double> clean(cfg);
  const auto xn = noisy.batch(Split::Train, 0, 4), xc = clean.batch(Split::Train, 0, 4);
  double ratio = 0.0;
  for (int c = 0; c < cfg.bands; ++c) {
    double sq = 0.0;
    std::size_t n = 0;
    for (std::size_t b = 0; b < 4; ++b)
      for (int r = 0; r < cfg.height; ++r)
        for (int j = 0; j < cfg.width; ++j, ++n) sq += std::pow(xn(b, c, r, j) - xc(b, c, r, j), 2);
    ratio += std::sqrt(sq / n) / clean.band_std()[c] / cfg.bands;
  }
  CHECK(ratio == doctest::Approx(0.1).epsilon(0.05));
}

TEST_CASE("HyperspectralGenerator: spectra are smooth, distinct reflectances") {
  dchag::HyperspectralConfig cfg;
  cfg.bands = 224;  // AVIRIS-like
  dchag::HyperspectralGenerator<double> gen(cfg);
  const auto s = gen.endmember_spectra();
  const auto& wl = gen.wavelengths();
  REQUIRE(wl.size() == 224u);
  CHECK(wl.front() > cfg.min_wavelength);
  CHECK(wl.back() < cfg.max_wavelength);
  Kokkos::View<double****, Kokkos::LayoutRight, Kokkos::HostSpace,
               Kokkos::MemoryTraits<Kokkos::Unmanaged>>
      as_image(s.data(), 1, 1, cfg.endmembers, cfg.bands);  // one row per spectrum
  for (int e = 0; e < cfg.endmembers; ++e) {
    CAPTURE(e);
    double lo = 1.0, hi = 0.0, d = 0.0, m = 0.0, v = 0.0;
    for (int c = 0; c < cfg.bands; ++c) {
      lo = std::min(lo, s(e, c));
      hi = std::max(hi, s(e, c));
      m += s(e, c) / cfg.bands;
      v += s(e, c) * s(e, c) / cfg.bands;
      if (c > 0) d += std::pow(s(e, c) - s(e, c - 1), 2) / (cfg.bands - 1);
    }
    CHECK(lo >= 0.01);
    CHECK(hi <= 0.99);
    CHECK(d < 0.05 * (v - m * m));
    for (int f = 0; f < e; ++f) {
      double diff = 0.0;
      for (int c = 0; c < cfg.bands; ++c) diff = std::max(diff, std::abs(s(e, c) - s(f, c)));
      CHECK(diff > 0.05);
    }
  }
}

TEST_CASE("HyperspectralGenerator: bands are correlated, smooth in space and normalised") {
  dchag::HyperspectralConfig cfg;
  dchag::HyperspectralGenerator<double> gen(cfg);
  for (Split split : {Split::Train, Split::Test}) {
    const std::string split_label = dchag::split_name(split);
    CAPTURE(split_label);
    const auto x = gen.batch(split, spread(16, gen.size(split) / 16));
    double neighbour_corr = 0.0, mean_roughness = 0.0;
    for (int c = 0; c < cfg.bands; ++c) {
      CAPTURE(c);
      const auto m = channel_moments(x, c);
      CHECK(std::abs(m.mean) < 0.6);
      CHECK(m.std > 0.6);
      CHECK(m.std < 1.5);
      const double rough = roughness(x, c);
      CHECK(rough < 0.25);
      mean_roughness += rough / cfg.bands;
      if (c + 1 < cfg.bands) neighbour_corr += correlation(x, c, x, c + 1) / (cfg.bands - 1);
    }
    CHECK(mean_roughness < 0.1);
    CHECK(neighbour_corr > 0.9);
  }
  // Held out: Test scenes are not Train scenes.
  CHECK(max_abs_diff(gen.batch(Split::Train, 0, 2), gen.batch(Split::Test, 0, 2)) > 0.5);
}

TEST_CASE_TEMPLATE_DEFINE("HyperspectralGenerator fills views in any memory space", C,
                          hyperspectral_device) {
  using Space = typename C::space;
  using T = typename C::scalar;
  auto cfg = small_config();
  dchag::HyperspectralGenerator<T> gen(cfg);
  dchag::View4<T, Space> x("x", 2, 30, cfg.height, cfg.width);
  gen.fill(Split::Test, std::vector<std::size_t>{7, 1}, x, 50);
  const auto ref = gen.batch(Split::Test, std::vector<std::size_t>{7, 1}, 50, 80);
  CHECK(bitwise_equal(dchag_test::to_host(x), ref));
}
TEST_CASE_TEMPLATE_APPLY(hyperspectral_device, dchag_test::AllCases);

TEST_CASE("HyperspectralGenerator: bad configurations and requests throw dchag::Error") {
  using Gen = dchag::HyperspectralGenerator<float>;
  const std::vector<std::pair<std::string, std::function<void(dchag::HyperspectralConfig&)>>>
      bad = {
          {"bands = 0", [](auto& c) { c.bands = 0; }},
          {"height = 0", [](auto& c) { c.height = 0; }},
          {"width = -1", [](auto& c) { c.width = -1; }},
          {"endmembers = 0", [](auto& c) { c.endmembers = 0; }},
          {"modes = 0", [](auto& c) { c.modes = 0; }},
          {"max_wavenumber = 0", [](auto& c) { c.max_wavenumber = 0; }},
          {"noise = -1", [](auto& c) { c.noise = -1; }},
          {"sharpness = 0", [](auto& c) { c.sharpness = 0; }},
          {"patch_scale = -2", [](auto& c) { c.patch_scale = -2; }},
          {"wavelength range [900, 800]",
           [](auto& c) { c.min_wavelength = 900, c.max_wavelength = 800; }},
          {"train_size = 0", [](auto& c) { c.train_size = 0; }},
          {"test_size = 0", [](auto& c) { c.test_size = 0; }},
      };
  // No structured bindings here: CAPTURE and the lambda would capture them, which clang < 16
  // refuses.
  for (const auto& item : bad) {
    const std::string& message = item.first;
    CAPTURE(message);
    auto cfg = small_config();
    item.second(cfg);
    CHECK(throws_error_containing([&] { Gen gen(cfg); }, message));
  }

  auto cfg = small_config();
  cfg.test_size = 5;
  Gen gen(cfg);
  CHECK(throws_error_containing([&] { gen.batch(Split::Train, 0, 1, 0, 98); },
                                "band range [0, 98)"));
  CHECK_THROWS_AS(gen.batch(Split::Train, 0, 1, -2, 5), dchag::Error);
  CHECK_THROWS_AS(gen.batch(Split::Train, 0, 1, 5, 5), dchag::Error);
  CHECK(throws_error_containing([&] { gen.batch(Split::Test, 4, 2); }, "test index 5"));
  CHECK_THROWS_AS(gen.abundances(Split::Test, 5), dchag::Error);
  using HostSpace = Kokkos::DefaultHostExecutionSpace;
  dchag::View4<float, HostSpace> x("x", 2, 97, 16, 23);
  CHECK(throws_error_containing([&] { gen.fill(Split::Train, 0, x); }, "wrong shape"));
  dchag::View3<float, HostSpace> s("s", 97, 16, 24);
  CHECK_THROWS_AS(gen.sample(Split::Train, 0, s, 1), dchag::Error);
}

TEST_CASE("HyperspectralGenerator: a batch of 8 x 256 bands x 32 x 32 is fast") {
  dchag::HyperspectralConfig cfg;
  cfg.bands = 256;
  dchag::HyperspectralGenerator<float> gen(cfg);
  auto x = gen.batch(Split::Train, 0, 8);
  double best_wall = 1e9, best_cpu = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    const auto c0 = std::clock();
    const auto t0 = std::chrono::steady_clock::now();
    gen.fill(Split::Train, 8 * (rep + 1), x);
    const auto t1 = std::chrono::steady_clock::now();
    best_cpu = std::min(best_cpu, 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC);
    best_wall = std::min(best_wall, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  MESSAGE("hyperspectral batch 8 x 256 x 32 x 32: ", best_wall, " ms wall, ", best_cpu, " ms cpu");
#ifdef NDEBUG
  CHECK(best_cpu < 100.0);
#endif
}
