#ifndef DCHAG_TESTS_IO_IO_STATS_HPP
#define DCHAG_TESTS_IO_IO_STATS_HPP

// Statistics over host views [B, C, H, W] that the generator tests assert on, in double.

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include <dchag/core/error.hpp>

namespace io_test {

// True when f() throws dchag::Error whose message contains `text`.
template <class F>
bool throws_error_containing(F&& f, const std::string& text) {
  try {
    f();
  } catch (const dchag::Error& e) {
    return std::string(e.what()).find(text) != std::string::npos;
  }
  return false;
}

template <class A, class B>
bool bitwise_equal(const A& a, const B& b) {
  for (unsigned r = 0; r < A::rank; ++r)
    if (a.extent(r) != b.extent(r)) return false;
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(typename A::value_type)) == 0;
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(double(a.data()[i]) - double(b.data()[i])));
  return m;
}

// Channel `c` of x[B, C, H, W], bitwise equal to channel `cs` of xs[B, C', H, W]?
template <class A, class B>
bool channel_bitwise_equal(const A& x, int c, const B& xs, int cs) {
  const std::size_t block = x.extent(2) * x.extent(3);
  for (std::size_t b = 0; b < x.extent(0); ++b)
    if (std::memcmp(&x(b, c, 0, 0), &xs(b, cs, 0, 0), block * sizeof(typename A::value_type)))
      return false;
  return true;
}

struct Moments {
  double mean, std;
};

// Over all samples and pixels of one channel.
template <class V>
Moments channel_moments(const V& x, int c) {
  double s = 0, ss = 0;
  std::size_t n = 0;
  for (std::size_t b = 0; b < x.extent(0); ++b)
    for (std::size_t r = 0; r < x.extent(2); ++r)
      for (std::size_t j = 0; j < x.extent(3); ++j) {
        const double v = x(b, c, r, j);
        s += v;
        ss += v * v;
        ++n;
      }
  const double m = s / n;
  return {m, std::sqrt(std::max(ss / n - m * m, 0.0))};
}

// Pearson correlation of channel c of x with channel d of y over samples and pixels; the column
// of y is shifted by `shift` (periodically), i.e. pairs x(.., j) with y(.., j + shift).
template <class V, class W>
double correlation(const V& x, int c, const W& y, int d, int shift = 0, std::size_t row0 = 0,
                   std::size_t row1 = std::size_t(-1)) {
  const std::size_t ww = x.extent(3);
  row1 = std::min(row1, std::size_t(x.extent(2)));
  double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  std::size_t n = 0;
  for (std::size_t b = 0; b < x.extent(0); ++b)
    for (std::size_t r = row0; r < row1; ++r)
      for (std::size_t j = 0; j < ww; ++j) {
        const double u = x(b, c, r, j);
        const double v = y(b, d, r, (j + ww + shift % int(ww)) % ww);
        sx += u;
        sy += v;
        sxx += u * u;
        syy += v * v;
        sxy += u * v;
        ++n;
      }
  const double mx = sx / n, my = sy / n;
  return (sxy / n - mx * my) / std::sqrt((sxx / n - mx * mx) * (syy / n - my * my));
}

// Mean squared difference between horizontally and vertically adjacent pixels of channel c,
// relative to the channel's variance: ~2 for white noise, << 1 for a smooth field.
template <class V>
double roughness(const V& x, int c) {
  double d = 0;
  std::size_t n = 0;
  for (std::size_t b = 0; b < x.extent(0); ++b)
    for (std::size_t r = 0; r < x.extent(2); ++r)
      for (std::size_t j = 0; j < x.extent(3); ++j) {
        const double v = x(b, c, r, j);
        if (j + 1 < x.extent(3)) {
          const double e = x(b, c, r, j + 1) - v;
          d += e * e;
          ++n;
        }
        if (r + 1 < x.extent(2)) {
          const double e = x(b, c, r + 1, j) - v;
          d += e * e;
          ++n;
        }
      }
  const double s = channel_moments(x, c).std;
  return d / n / (s * s);
}

}  // namespace io_test

#endif
