#include <dchag/core/error.hpp>
#include <dchag/kernels/reductions.hpp>

#include <limits>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
template <class View>
Eigen::VectorXd flat_eigen(const View& v) {
  auto h = to_host(v);
  Eigen::VectorXd x(h.size());
  for (std::size_t k = 0; k < h.size(); ++k) x(k) = static_cast<double>(h.data()[k]);
  return x;
}

template <class View>
void set_element(const View& v, std::size_t k, double value) {
  auto h = to_host(v);
  h.data()[k] = static_cast<typename View::value_type>(value);
  Kokkos::deep_copy(v, h);
}

// Every reduction on one view (and a second of the same shape), against Eigen on the elements.
template <class T, class Space, class V>
void check_reductions(const V& x, const V& y, std::uint64_t seed) {
  Space space;
  fill_random(x, seed);
  fill_random(y, seed + 1);
  const Eigen::VectorXd x0 = flat_eigen(x), y0 = flat_eigen(y);
  // Accumulated in double from exactly representable squares: only the order of the
  // additions differs from Eigen's, for float inputs as for double.
  CHECK(std::abs(dchag::sum_squares(space, x) - x0.squaredNorm()) <
        1e-12 * x0.squaredNorm());
  CHECK(dchag::all_finite(space, x));

  dchag::add_scaled(space, y, T(-0.75), x);
  CHECK(rel_diff(flat_eigen(y), y0 - 0.75 * x0) < tol<T>());
  dchag::scale(space, x, T(2.5));
  CHECK(rel_diff(flat_eigen(x), 2.5 * x0) < tol<T>());

  const std::size_t last = x.size() - 1;
  set_element(x, last, std::numeric_limits<double>::quiet_NaN());
  CHECK_FALSE(dchag::all_finite(space, x));
  set_element(x, last, 1.0);
  CHECK(dchag::all_finite(space, x));
  set_element(x, x.size() / 2, -std::numeric_limits<double>::infinity());
  CHECK_FALSE(dchag::all_finite(space, x));
  set_element(x, x.size() / 2, 0.5);
  set_element(x, 0, std::numeric_limits<double>::infinity());
  CHECK_FALSE(dchag::all_finite(space, x));
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("sum_squares, all_finite, scale, add_scaled on views of rank 1-3", C,
                          reductions_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  std::uint64_t seed = 50;
  for (int n : {1, 5, 64, 129, 100003}) {
    CAPTURE(n);
    dchag::View1<T, Space> x("x", n), y("y", n);
    check_reductions<T, Space>(x, y, seed);
    seed += 2;
  }
  for (int rows : {1, 7, 33}) {
    dchag::View2<T, Space> x("x", rows, 129), y("y", rows, 129);
    check_reductions<T, Space>(x, y, seed);
    seed += 2;
  }
  dchag::View3<T, Space> x3("x", 3, 5, 7), y3("y", 3, 5, 7);
  check_reductions<T, Space>(x3, y3, seed);
}
TEST_CASE_TEMPLATE_APPLY(reductions_eigen, AllCases);

TEST_CASE("sum_squares keeps float inputs' precision by accumulating in double") {
  using Space = Kokkos::DefaultExecutionSpace;
  // 2^24 ones then small terms: a float accumulator stops growing at 2^24.
  const std::size_t n = (1u << 24) + 1000;
  dchag::View1<float, Space> x("x", n);
  Kokkos::deep_copy(x, 1.0f);
  CHECK(dchag::sum_squares(Space(), x) == double(n));
}

TEST_CASE("reductions accept empty views (an FSDP slice may hold nothing)") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<float, Space> e("e", 0, 4), f("f", 0, 4);
  CHECK(dchag::sum_squares(space, e) == 0.0);
  CHECK(dchag::all_finite(space, e));
  dchag::scale(space, e, 2.0f);
  dchag::add_scaled(space, e, 2.0f, f);
}

TEST_CASE("reductions refuse mismatched and strided views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> X("X", 3, 4), Y("Y", 4, 3);
  CHECK_THROWS_WITH_AS(dchag::add_scaled(space, Y, 1.0, X), doctest::Contains("'X'[3, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_scaled(space, Y, 1.0, X), doctest::Contains("'Y'[4, 3]"),
                       dchag::Error);
  auto column = Kokkos::subview(X, Kokkos::ALL, 1);
  dchag::View1<double, Space> c("c", 3);
  CHECK_THROWS_WITH_AS(dchag::sum_squares(space, column), doctest::Contains("not contiguous"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::all_finite(space, column), doctest::Contains("not contiguous"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::scale(space, column, 2.0), doctest::Contains("not contiguous"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_scaled(space, c, 1.0, column),
                       doctest::Contains("not contiguous"), dchag::Error);
}
