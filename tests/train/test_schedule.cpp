#include <dchag/train/schedule.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>

TEST_CASE("WarmupCosine follows ClimaX's linear warm-up and cosine decay") {
  const double base = 5e-4, start = 1e-8, floor = 1e-6;
  const long warmup = 10, total = 110;
  const dchag::WarmupCosine s(base, warmup, total, start, floor);

  // Warm-up: start + step (base - start) / (warmup - 1).
  CHECK(s.lr(0) == start);
  CHECK(s.lr(4) == doctest::Approx(start + 4 * (base - start) / 9));
  CHECK(s.lr(warmup - 1) == doctest::Approx(base));
  // Cosine: min + (base - min) (1 + cos(pi (step - warmup) / (total - warmup))) / 2.
  CHECK(s.lr(warmup) == doctest::Approx(base));
  CHECK(s.lr(60) == doctest::Approx(floor + 0.5 * (base - floor)));
  CHECK(s.lr(35) ==
        doctest::Approx(floor + 0.5 * (base - floor) * (1 + std::cos(M_PI * 25.0 / 100.0))));
  CHECK(s.lr(total) == doctest::Approx(floor));
  CHECK(s.lr(total + 1000) == floor);
  // Monotone: up during warm-up, down after.
  for (long k = 1; k < warmup; ++k) CHECK(s.lr(k) > s.lr(k - 1));
  for (long k = warmup + 1; k <= total; ++k) CHECK(s.lr(k) < s.lr(k - 1));

  CHECK(s.base_lr() == base);
  CHECK(s.warmup_steps() == warmup);
  CHECK(s.total_steps() == total);
}

TEST_CASE("WarmupCosine without warm-up starts at base_lr") {
  const dchag::WarmupCosine s(1e-3, 0, 4);
  CHECK(s.lr(0) == doctest::Approx(1e-3));
  CHECK(s.lr(2) == doctest::Approx(0.5e-3));
  CHECK(s.lr(4) == doctest::Approx(0.0));
  // A one-step warm-up spends that step at warmup_start_lr.
  const dchag::WarmupCosine one(1e-3, 1, 5, 1e-5);
  CHECK(one.lr(0) == 1e-5);
  CHECK(one.lr(1) == doctest::Approx(1e-3));
}

TEST_CASE("WarmupCosine refuses bad arguments") {
  using dchag::WarmupCosine;
  CHECK_THROWS_WITH_AS(WarmupCosine(0.0, 10, 100), doctest::Contains("base_lr"), dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(std::numeric_limits<double>::infinity(), 10, 100),
                       doctest::Contains("base_lr"), dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, -1, 100), doctest::Contains("warmup_steps"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, 100, 100), doctest::Contains("total_steps"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, 10, 100, 1e-2), doctest::Contains("warmup_start_lr"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, 10, 100, 0.0, 2e-3), doctest::Contains("min_lr"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, 10, 100, 0.0, -1.0), doctest::Contains("min_lr"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(WarmupCosine(1e-3, 10, 100).lr(-1), doctest::Contains("step"),
                       dchag::Error);
}
