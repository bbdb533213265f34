#ifndef DCHAG_TESTS_GRADCHECK_HPP
#define DCHAG_TESTS_GRADCHECK_HPP

// Central finite differences against hand-written backward passes (run in double).

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "test_common.hpp"

namespace dchag_test {

// Flat unmanaged alias of any contiguous view, so one helper serves every rank.
template <class View>
struct Unflat {
  using T = typename View::non_const_value_type;
  using Flat = Kokkos::View<T*, Kokkos::LayoutRight, typename View::memory_space,
                            Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  static Flat flat(const View& v) {
    return Flat(const_cast<T*>(v.data()), v.size());
  }
};

template <class View>
double get_element(const View& v, std::size_t i) {
  typename View::non_const_value_type x;
  Kokkos::deep_copy(x, Kokkos::subview(Unflat<View>::flat(v), i));
  return static_cast<double>(x);
}

template <class View>
void set_element(const View& v, std::size_t i, double x) {
  Kokkos::deep_copy(Kokkos::subview(Unflat<View>::flat(v), i),
                    static_cast<typename View::non_const_value_type>(x));
}

// Largest |numeric - analytic| over up to `samples` entries of `values`, relative to the
// largest analytic entry checked. `loss()` must recompute the scalar loss from scratch.
template <class ValueView, class GradView, class Loss>
double gradient_error(const ValueView& values, const GradView& grad, Loss&& loss,
                      int samples = 24, double h = 1e-6, unsigned seed = 7) {
  REQUIRE(values.size() == grad.size());
  std::vector<std::size_t> idx;
  if (values.size() <= std::size_t(samples)) {
    for (std::size_t i = 0; i < values.size(); ++i) idx.push_back(i);
  } else {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<std::size_t> pick(0, values.size() - 1);
    for (int s = 0; s < samples; ++s) idx.push_back(pick(gen));
  }
  double worst = 0, scale = 1e-12;
  for (std::size_t i : idx) {
    const double x0 = get_element(values, i);
    set_element(values, i, x0 + h);
    const double fp = loss();
    set_element(values, i, x0 - h);
    const double fm = loss();
    set_element(values, i, x0);
    const double numeric = (fp - fm) / (2 * h);
    const double analytic = get_element(grad, i);
    worst = std::max(worst, std::abs(numeric - analytic));
    scale = std::max(scale, std::abs(analytic));
  }
  return worst / scale;
}

// sum(y * r) in double: a loss whose gradient with respect to y is exactly r.
template <class YView, class RView>
double dot(const YView& y, const RView& r) {
  REQUIRE(y.size() == r.size());
  auto hy = to_host(y);
  auto hr = to_host(r);
  double s = 0;
  for (std::size_t i = 0; i < hy.span(); ++i)
    s += static_cast<double>(hy.data()[i]) * static_cast<double>(hr.data()[i]);
  return s;
}

}  // namespace dchag_test

#endif
