#include <dchag/core/error.hpp>
#include <dchag/kernels/gelu.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
// The elements of a contiguous view of any rank, in double.
template <class View>
Eigen::VectorXd flat_eigen(const View& v) {
  auto h = to_host(v);
  Eigen::VectorXd x(h.size());
  for (std::size_t k = 0; k < h.size(); ++k) x(k) = static_cast<double>(h.data()[k]);
  return x;
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_grad_ref(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * pi);
}

// Forward and backward on views X, Y, dY, dX of one shape, against the formulas above.
template <class T, class Space, class V>
void check_gelu(const V& X, const V& Y, const V& dY, const V& dX, std::uint64_t seed) {
  Space space;
  fill_random(X, seed, -4.0, 4.0);
  fill_random(dY, seed + 1);
  fill_random(dX, seed + 2);
  dchag::gelu(space, X, Y);
  dchag::gelu_backward(space, X, dY, dX);
  const Eigen::VectorXd x = flat_eigen(X), dy = flat_eigen(dY);
  const Eigen::VectorXd y_ref = x.unaryExpr(&gelu_ref);
  const Eigen::VectorXd dx_ref = dy.cwiseProduct(x.unaryExpr(&gelu_grad_ref));
  CHECK(rel_diff(flat_eigen(Y), y_ref) < tol<T>());
  CHECK(rel_diff(flat_eigen(dX), dx_ref) < tol<T>());
  // In place: Y over X, dX over dY.
  dchag::gelu_backward(space, X, dY, dY);
  CHECK(rel_diff(flat_eigen(dY), dx_ref) < tol<T>());
  dchag::gelu(space, X, X);
  CHECK(rel_diff(flat_eigen(X), y_ref) < tol<T>());
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("gelu and its backward match erf formulas on views of rank 1-3", C,
                          gelu_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  std::uint64_t seed = 30;
  for (int rows : {1, 7, 33}) {
    for (int n : {1, 5, 64, 129}) {
      CAPTURE(rows);
      CAPTURE(n);
      dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n), dY("dY", rows, n),
          dX("dX", rows, n);
      check_gelu<T, Space>(X, Y, dY, dX, seed);
      seed += 3;
    }
  }
  dchag::View1<T, Space> x1("x", 1001), y1("y", 1001), dy1("dy", 1001), dx1("dx", 1001);
  check_gelu<T, Space>(x1, y1, dy1, dx1, 90);
  dchag::View3<T, Space> x3("x", 3, 5, 7), y3("y", 3, 5, 7), dy3("dy", 3, 5, 7),
      dx3("dx", 3, 5, 7);
  check_gelu<T, Space>(x3, y3, dy3, dx3, 95);
}
TEST_CASE_TEMPLATE_APPLY(gelu_eigen, AllCases);

TEST_CASE("gelu at known points") {
  using Space = Kokkos::DefaultExecutionSpace;
  dchag::View1<double, Space> X("X", 3), Y("Y", 3);
  auto h = Kokkos::create_mirror_view(X);
  h(0) = 0.0;
  h(1) = 1.0;
  h(2) = -30.0;
  Kokkos::deep_copy(X, h);
  dchag::gelu(Space(), X, Y);
  auto y = to_host(Y);
  CHECK(y(0) == 0.0);
  CHECK(y(1) == doctest::Approx(0.8413447460685429).epsilon(1e-14));  // Phi(1)
  CHECK(y(2) == doctest::Approx(0.0));
}

TEST_CASE("gelu refuses mismatched, empty and strided views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> X("X", 3, 4), Y("Y", 4, 3), E("E", 0, 4);
  CHECK_THROWS_WITH_AS(dchag::gelu(space, X, Y), doctest::Contains("'X'[3, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gelu(space, X, Y), doctest::Contains("'Y'[4, 3]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gelu_backward(space, X, X, Y), doctest::Contains("'Y'[4, 3]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gelu_backward(space, X, Y, X), doctest::Contains("'X'[3, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gelu(space, E, E), doctest::Contains("'E'[0, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gelu(space, E, E), doctest::Contains("empty"), dchag::Error);
  // A column of a row-major matrix: right size, elements not adjacent.
  auto column = Kokkos::subview(X, Kokkos::ALL, 1);
  dchag::View1<double, Space> y("y", 3);
  CHECK_THROWS_WITH_AS(dchag::gelu(space, column, y), doctest::Contains("not contiguous"),
                       dchag::Error);
}

// The host kernels take a cheaper path for a block of 32 inputs that all have |x / sqrt 2| < 1;
// it must give the bits of the general path. Inputs in (-1.4, 1.4), some blocks spoiled by one
// large or NaN value, a length that leaves a partial block at the end of a work item and of
// the array.
TEST_CASE_TEMPLATE_DEFINE("gelu's small-input blocks give the general path's bits", C,
                          gelu_blocks) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int n = 4096 + 32 * 37 + 5;
  dchag::View1<T, Space> X("X", n), Y("Y", n), dY("dY", n), dX("dX", n);
  fill_random(X, 500, -1.4, 1.4);
  fill_random(dY, 501);
  {
    auto h = Kokkos::create_mirror_view(X);
    Kokkos::deep_copy(h, X);
    for (int k = 5; k < n; k += 32 * 3) h(k) = T(k % 2 ? 3.0 : -2.0);
    h(32 * 20 + 3) = std::numeric_limits<T>::quiet_NaN();
    Kokkos::deep_copy(X, h);
  }
  dchag::gelu(space, X, Y);
  dchag::gelu_backward(space, X, dY, dX);
  auto x = to_host(X), y = to_host(Y), dy = to_host(dY), dx = to_host(dX);
  int mismatches = 0, bad = 0, nans = 0;
  for (int k = 0; k < n; ++k) {
    if (std::isnan(x(k))) {
      nans += std::isnan(y(k)) && std::isnan(dx(k));
      continue;
    }
    const T y_ref = dchag::Impl::gelu_value<false>(x(k));
    const T dx_ref = dy(k) * dchag::Impl::gelu_slope<false>(x(k));
    mismatches += y(k) != y_ref || dx(k) != dx_ref;
    const double xd = x(k);
    bad += std::abs(y(k) - gelu_ref(xd)) > 4 * tol<T>() * (1 + std::abs(gelu_ref(xd)));
    bad += std::abs(dx(k) - dy(k) * gelu_grad_ref(xd)) > 4 * tol<T>();
  }
  CHECK(nans == 1);
  CHECK(bad == 0);
  // Bitwise only where the test and the kernel are compiled for the same processor.
  if (Kokkos::SpaceAccessibility<Space, Kokkos::HostSpace>::accessible) CHECK(mismatches == 0);
}
TEST_CASE_TEMPLATE_APPLY(gelu_blocks, AllCases);
