#include <dchag/io/weather.hpp>

#include <chrono>
#include <ctime>
#include <functional>
#include <string>

#include "io_stats.hpp"
#include "test_common.hpp"

using dchag::Split;
using namespace io_test;

namespace {

dchag::WeatherConfig small_config() {
  dchag::WeatherConfig cfg;
  cfg.channels = 13;  // odd, so channel slices are uneven
  cfg.height = 16;
  cfg.width = 32;
  cfg.latents = 4;
  cfg.seed = 7;
  return cfg;
}

// Indices spread over the split, so batch statistics see many different states.
std::vector<std::size_t> spread(std::size_t count, std::size_t step) {
  std::vector<std::size_t> v(count);
  for (std::size_t i = 0; i < count; ++i) v[i] = i * step;
  return v;
}

}  // namespace

TEST_CASE_TEMPLATE("WeatherGenerator: same seed gives identical data, another seed other data",
                   T, float, double) {
  auto cfg = small_config();
  dchag::WeatherGenerator<T> a(cfg), b(cfg);
  auto ba = a.batch(Split::Train, 10, 3), bb = b.batch(Split::Train, 10, 3);
  CHECK(bitwise_equal(ba.x, bb.x));
  CHECK(bitwise_equal(ba.y, bb.y));
  CHECK(bitwise_equal(ba.lead_time, bb.lead_time));

  cfg.seed = 8;
  dchag::WeatherGenerator<T> c(cfg);
  auto bc = c.batch(Split::Train, 10, 3);
  CHECK(max_abs_diff(ba.x, bc.x) > 0.5);
  CHECK(max_abs_diff(ba.y, bc.y) > 0.5);

  // A sample does not depend on the batch it is requested in.
  auto one = a.batch(Split::Train, 11, 1);
  auto sub_x = Kokkos::subview(ba.x, 1, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
  auto one_x = Kokkos::subview(one.x, 0, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
  CHECK(std::memcmp(sub_x.data(), one_x.data(), one_x.size() * sizeof(T)) == 0);
  auto shuffled = a.batch(Split::Train, std::vector<std::size_t>{12, 10, 11});
  const std::size_t sample_bytes = ba.x.size() / 3 * sizeof(T);
  CHECK(std::memcmp(&shuffled.x(1, 0, 0, 0), &ba.x(0, 0, 0, 0), sample_bytes) == 0);
  CHECK(std::memcmp(&shuffled.y(0, 0, 0, 0), &ba.y(2, 0, 0, 0), sample_bytes) == 0);
}

TEST_CASE_TEMPLATE("WeatherGenerator: channel ranges are bit-identical to the full batch", T,
                   float, double) {
  for (bool normalize : {true, false}) {
    auto cfg = small_config();
    cfg.normalize = normalize;
    cfg.max_lead_time = 9;
    dchag::WeatherGenerator<T> gen(cfg);
    const auto full = gen.batch(Split::Test, 5, 4);
    const std::pair<int, int> ranges[] = {{0, 5}, {5, 13}, {3, 4}, {12, 13}, {0, 13}};
    for (auto range : ranges) {
      CAPTURE(range.first);
      CAPTURE(range.second);
      const auto part = gen.batch(Split::Test, 5, 4, range.first, range.second);
      REQUIRE(part.x.extent(1) == std::size_t(range.second - range.first));
      for (int c = range.first; c < range.second; ++c) {
        CHECK(channel_bitwise_equal(full.x, c, part.x, c - range.first));
        CHECK(channel_bitwise_equal(full.y, c, part.y, c - range.first));
      }
      CHECK(bitwise_equal(full.lead_time, part.lead_time));
    }
  }
}

TEST_CASE_TEMPLATE("WeatherGenerator: sample, state and batch agree", T, float, double) {
  auto cfg = small_config();
  cfg.lead_time = 2;
  cfg.max_lead_time = 10;
  dchag::WeatherGenerator<T> gen(cfg);
  const auto b = gen.batch(Split::Train, 40, 32);
  bool leads_vary = false;
  for (std::size_t i = 0; i < 32; ++i) {
    const int lead = gen.lead_steps(Split::Train, 40 + i);
    CHECK(lead >= 2);
    CHECK(lead <= 10);
    leads_vary = leads_vary || lead != gen.lead_steps(Split::Train, 40);
    CHECK(double(b.lead_time(i)) == doctest::Approx(lead * cfg.hours_per_step / 100.0));
  }
  CHECK(leads_vary);

  dchag::View3<T, Kokkos::DefaultHostExecutionSpace> x("x", 4, cfg.height, cfg.width),
      y("y", 4, cfg.height, cfg.width), s("s", 4, cfg.height, cfg.width);
  const int lead = gen.sample(Split::Train, 43, x, y, 6);
  CHECK(lead == gen.lead_steps(Split::Train, 43));
  for (int c = 0; c < 4; ++c) {
    const std::size_t block = std::size_t(cfg.height) * cfg.width * sizeof(T);
    CHECK(std::memcmp(&x(c, 0, 0), &b.x(3, 6 + c, 0, 0), block) == 0);
    CHECK(std::memcmp(&y(c, 0, 0), &b.y(3, 6 + c, 0, 0), block) == 0);
  }
  // The state is a function of time alone: the target is the state at t + lead.
  gen.state(gen.time_index(Split::Train, 43) + lead, s, 6);
  CHECK(bitwise_equal(s, y));
}

TEST_CASE("WeatherGenerator: latitudes run from -90 + dlat/2 to 90 - dlat/2") {
  auto cfg = small_config();
  dchag::WeatherGenerator<double> gen(cfg);
  const auto& lat = gen.latitudes();
  REQUIRE(lat.size() == std::size_t(cfg.height));
  const double dlat = 180.0 / cfg.height;
  CHECK(lat.front() == doctest::Approx(-90 + dlat / 2));
  CHECK(lat.back() == doctest::Approx(90 - dlat / 2));
  for (std::size_t r = 1; r < lat.size(); ++r) CHECK(lat[r] - lat[r - 1] == doctest::Approx(dlat));
  CHECK(gen.longitudes().size() == std::size_t(cfg.width));
  CHECK(gen.longitudes()[1] == doctest::Approx(360.0 / cfg.width));
}

TEST_CASE("WeatherGenerator: fields are smooth, correlated across channels, and normalised") {
  dchag::WeatherConfig cfg;  // the defaults: 16 channels on 32 x 64
  dchag::WeatherGenerator<double> gen(cfg);
  for (Split split : {Split::Train, Split::Test}) {
    const std::string split_label = dchag::split_name(split);
    CAPTURE(split_label);
    const auto b = gen.batch(split, spread(16, gen.size(split) / 16));
    double best_pair = 0.0;
    for (int c = 0; c < cfg.channels; ++c) {
      CAPTURE(c);
      CHECK(roughness(b.x, c) < 0.1);
      const auto m = channel_moments(b.x, c);
      CHECK(std::abs(m.mean) < 0.25);
      CHECK(m.std > 0.7);
      CHECK(m.std < 1.3);
      for (int d = c + 1; d < cfg.channels; ++d)
        best_pair = std::max(best_pair, std::abs(correlation(b.x, c, b.x, d)));
    }
    CHECK(best_pair > 0.5);
  }
  // Not degenerate either: channels are not copies of each other.
  const auto b = gen.batch(Split::Train, 0, 4);
  CHECK(std::abs(correlation(b.x, 0, b.x, cfg.channels - 1)) < 0.999);
}

TEST_CASE("WeatherGenerator: raw output is the normalised output in physical units") {
  auto cfg = small_config();
  dchag::WeatherGenerator<double> norm(cfg);
  cfg.normalize = false;
  dchag::WeatherGenerator<double> raw(cfg);
  const auto bn = norm.batch(Split::Train, 100, 2), br = raw.batch(Split::Train, 100, 2);
  double err = 0.0, spread_of_means = 0.0;
  for (int c = 0; c < cfg.channels; ++c) {
    CHECK(raw.channel_mean()[c] == norm.channel_mean()[c]);
    CHECK(raw.channel_std()[c] == norm.channel_std()[c]);
    spread_of_means = std::max(spread_of_means, std::abs(raw.channel_mean()[c]));
    for (std::size_t b = 0; b < 2; ++b)
      for (int r = 0; r < cfg.height; ++r)
        for (int j = 0; j < cfg.width; ++j) {
          const double back = (br.x(b, c, r, j) - raw.channel_mean()[c]) / raw.channel_std()[c];
          err = std::max(err, std::abs(back - bn.x(b, c, r, j)));
        }
  }
  CHECK(err < 1e-9);
  CHECK(spread_of_means > 10.0);  // raw units really differ from the normalised ones
}

TEST_CASE("WeatherGenerator: the target is the input advected, not a copy of it") {
  dchag::WeatherConfig cfg;
  cfg.noise = 0.0;
  dchag::WeatherGenerator<double> gen(cfg);
  const auto b = gen.batch(Split::Train, spread(8, 1000));
  double mean_corr = 0.0, sq = 0.0;
  for (int c = 0; c < cfg.channels; ++c) mean_corr += correlation(b.x, c, b.y, c) / cfg.channels;
  for (std::size_t i = 0; i < b.x.size(); ++i) {
    const double e = b.x.data()[i] - b.y.data()[i];
    sq += e * e;
  }
  const double persistence_rmse = std::sqrt(sq / b.x.size());
  MESSAGE("corr(x, y) = ", mean_corr, ", persistence RMSE = ", persistence_rmse);
  CHECK(mean_corr > 0.7);
  CHECK(mean_corr < 0.99);
  CHECK(persistence_rmse > 0.1);

  // In the mid-latitude jets the target matches the input best when the input is moved east:
  // the data really are advected.
  const auto& lat = gen.latitudes();
  std::size_t row0 = 0, row1 = 0;
  while (row0 < lat.size() && lat[row0] < 35.0) ++row0;
  row1 = row0;
  while (row1 < lat.size() && lat[row1] < 55.0) ++row1;
  REQUIRE(row1 > row0);
  for (int c = 0; c < cfg.channels; c += 5) {
    CAPTURE(c);
    int best_shift = 0;
    double best = -1.0;
    for (int s = -cfg.width / 4; s <= cfg.width / 4; ++s) {
      const double r = correlation(b.x, c, b.y, c, s, row0, row1);
      if (r > best) best = r, best_shift = s;
    }
    CHECK(best_shift >= 2);
    CHECK(best > correlation(b.x, c, b.y, c, 0, row0, row1) + 0.02);
  }
}

TEST_CASE("WeatherGenerator: Test samples are held out") {
  auto cfg = small_config();
  cfg.train_size = 1000;
  cfg.test_size = 100;
  cfg.max_lead_time = 12;
  dchag::WeatherGenerator<float> gen(cfg);
  CHECK(gen.time_index(Split::Test, 0) > gen.time_index(Split::Train, 999) + 12);
  const auto train = gen.batch(Split::Train, 0, 2), test = gen.batch(Split::Test, 0, 2);
  CHECK(max_abs_diff(train.x, test.x) > 0.5);
}

TEST_CASE_TEMPLATE_DEFINE("WeatherGenerator fills views in any memory space", C, weather_device) {
  using Space = typename C::space;
  using T = typename C::scalar;
  auto cfg = small_config();
  dchag::WeatherGenerator<T> gen(cfg);
  dchag::View4<T, Space> x("x", 3, 6, cfg.height, cfg.width), y("y", 3, 6, cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", 3);
  gen.fill(Split::Train, 20, x, y, lead, 7);
  const auto ref = gen.batch(Split::Train, 20, 3, 7, 13);
  CHECK(bitwise_equal(dchag_test::to_host(x), ref.x));
  CHECK(bitwise_equal(dchag_test::to_host(y), ref.y));
  CHECK(bitwise_equal(dchag_test::to_host(lead), ref.lead_time));
}
TEST_CASE_TEMPLATE_APPLY(weather_device, dchag_test::AllCases);

TEST_CASE("WeatherGenerator: bad configurations and requests throw dchag::Error") {
  using Gen = dchag::WeatherGenerator<float>;
  const std::vector<std::pair<std::string, std::function<void(dchag::WeatherConfig&)>>> bad = {
      {"channels = 0", [](auto& c) { c.channels = 0; }},
      {"height = 0", [](auto& c) { c.height = 0; }},
      {"width = -3", [](auto& c) { c.width = -3; }},
      {"latents = 0", [](auto& c) { c.latents = 0; }},
      {"modes = 0", [](auto& c) { c.modes = 0; }},
      {"max_wavenumber = 0", [](auto& c) { c.max_wavenumber = 0; }},
      {"cannot resolve", [](auto& c) { c.width = 10; }},
      {"lead_time = 0", [](auto& c) { c.lead_time = 0; }},
      {"max_lead_time = 2", [](auto& c) { c.max_lead_time = 2; }},
      {"noise = -0.1", [](auto& c) { c.noise = -0.1; }},
      {"noise = nan", [](auto& c) { c.noise = std::nan(""); }},
      {"hours_per_step = 0", [](auto& c) { c.hours_per_step = 0; }},
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
  cfg.train_size = 50;
  cfg.test_size = 10;
  Gen gen(cfg);
  CHECK_THROWS_AS(gen.batch(Split::Train, 0, 2, -1, 3), dchag::Error);
  CHECK_THROWS_AS(gen.batch(Split::Train, 0, 2, 4, 4), dchag::Error);
  CHECK_THROWS_AS(gen.batch(Split::Train, 0, 2, 0, 14), dchag::Error);
  CHECK_THROWS_AS(gen.batch(Split::Train, 49, 2), dchag::Error);
  CHECK_THROWS_AS(gen.batch(Split::Test, 10, 1), dchag::Error);
  CHECK_THROWS_AS(gen.time_index(Split::Test, 10), dchag::Error);
  CHECK(throws_error_containing([&] { gen.batch(Split::Train, 0, 2, 0, 14); },
                                "channel range [0, 14)"));
  CHECK(throws_error_containing([&] { gen.batch(Split::Test, 10, 1); }, "test index 10"));

  using HostSpace = Kokkos::DefaultHostExecutionSpace;
  dchag::View4<float, HostSpace> x("x", 2, 13, 16, 32), y("y", 2, 13, 16, 32),
      wrong("wrong", 2, 13, 16, 31);
  dchag::View1<float, HostSpace> lead("lead", 2), short_lead("short_lead", 1);
  CHECK_NOTHROW(gen.fill(Split::Train, 0, x, y, lead));
  CHECK_THROWS_AS(gen.fill(Split::Train, 0, x, wrong, lead), dchag::Error);
  CHECK_THROWS_AS(gen.fill(Split::Train, 0, x, y, short_lead), dchag::Error);
  CHECK_THROWS_AS(gen.fill(Split::Train, 0, x, y, lead, 1), dchag::Error);  // 1 + 13 > 13
  dchag::View3<float, HostSpace> s("s", 13, 16, 32);
  CHECK_THROWS_AS(gen.state(-1, s), dchag::Error);
}

TEST_CASE("WeatherGenerator: a batch of 8 x 64 channels x 32 x 64 is fast") {
  dchag::WeatherConfig cfg;
  cfg.channels = 64;
  dchag::WeatherGenerator<float> gen(cfg);
  auto b = gen.batch(Split::Train, 0, 8);  // allocation and first touch out of the timing
  double best_wall = 1e9, best_cpu = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    const auto c0 = std::clock();
    const auto t0 = std::chrono::steady_clock::now();
    gen.fill(Split::Train, 8 * (rep + 1), b.x, b.y, b.lead_time);
    const auto t1 = std::chrono::steady_clock::now();
    best_cpu = std::min(best_cpu, 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC);
    best_wall = std::min(best_wall, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  MESSAGE("weather batch 8 x 64 x 32 x 64 (x and y): ", best_wall, " ms wall, ", best_cpu,
          " ms cpu");
#ifdef NDEBUG
  // CPU time, so that a loaded machine does not fail the test; unoptimised builds are exempt.
  CHECK(best_cpu < 100.0);
#endif
}
