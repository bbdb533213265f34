#include <dchag/core/error.hpp>
#include <dchag/kernels/residual.hpp>

#include "test_common.hpp"

using namespace dchag_test;

TEST_CASE_TEMPLATE_DEFINE("residual_add is the element-wise sum, also in place", C,
                          residual_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 90;
  for (int rows : {1, 7, 33}) {
    for (int n : {1, 5, 129}) {
      dchag::View2<T, Space> A("A", rows, n), B("B", rows, n), Y("Y", rows, n);
      fill_random(A, seed++);
      fill_random(B, seed++);
      fill_random(Y, seed++);  // must be overwritten
      const Matrix<double> a = to_eigen(A), b = to_eigen(B);
      // One rounding of the double sum to T is the correctly rounded sum in T, so the
      // comparison is exact.
      const Matrix<double> ref = (a + b).template cast<T>().template cast<double>();
      CAPTURE(rows);
      CAPTURE(n);
      dchag::residual_add(space, A, B, Y);
      CHECK(to_eigen(Y) == ref);
      dchag::residual_add(space, A, B, A);
      CHECK(to_eigen(A) == ref);
      dchag::residual_add(space, Y, B, B);
      CHECK(to_eigen(B) == (ref + b).template cast<T>().template cast<double>());
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(residual_eigen, AllCases);

TEST_CASE("residual_add refuses mismatched shapes, naming them") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> A("A", 3, 4), B("B", 3, 5), Y("Y", 4, 4);
  CHECK_THROWS_WITH_AS(dchag::residual_add(space, A, B, A), doctest::Contains("'B'[3, 5]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::residual_add(space, A, A, Y), doctest::Contains("'Y'[4, 4]"),
                       dchag::Error);
}
