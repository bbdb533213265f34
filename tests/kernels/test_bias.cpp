#include <dchag/core/error.hpp>
#include <dchag/kernels/bias.hpp>

#include "test_common.hpp"

using namespace dchag_test;

TEST_CASE_TEMPLATE_DEFINE("add_bias and sum_rows match Eigen; sum_rows accumulates", C,
                          bias_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 40;
  // 129 columns leave a partial column tile, 2500 a partial 1024-column row segment of the host
  // add_bias; 1000 rows make the column sums long.
  for (int rows : {1, 7, 33, 1000}) {
    for (int n : {1, 5, 64, 129, 2500}) {
      dchag::View2<T, Space> Y("Y", rows, n);
      dchag::View1<T, Space> b("b", n), db("db", n);
      fill_random(Y, seed++);
      fill_random(b, seed++);
      fill_random(db, seed++);
      const Matrix<double> y0 = to_eigen(Y);
      const Eigen::VectorXd bv = to_eigen_vector(b), db0 = to_eigen_vector(db);
      CAPTURE(rows);
      CAPTURE(n);

      dchag::add_bias(space, Y, b);
      const Matrix<double> y_ref = y0.rowwise() + bv.transpose();
      CHECK(rel_diff(to_eigen(Y), y_ref) < tol<T>());

      const Eigen::VectorXd colsum = y_ref.colwise().sum().transpose();
      // Even the worst-case float rounding of 1000 terms, 1000 * 6e-8 * |partial sums|, stays
      // under tol() relative to sums of that size.
      dchag::sum_rows(space, Y, db);
      CHECK(rel_diff(to_eigen_vector(db), db0 + colsum) < tol<T>());
      dchag::sum_rows(space, Y, db);
      CHECK(rel_diff(to_eigen_vector(db), db0 + 2.0 * colsum) < tol<T>());
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(bias_eigen, AllCases);

TEST_CASE_TEMPLATE_DEFINE("sum_rows from zero doubles exactly on a second call", C, bias_twice) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::View2<T, Space> dY("dY", 33, 129);
  dchag::View1<T, Space> db("db", 129);
  fill_random(dY, 7);
  dchag::sum_rows(space, dY, db);
  const Eigen::VectorXd once = to_eigen_vector(db);
  dchag::sum_rows(space, dY, db);
  CHECK(to_eigen_vector(db) == 2.0 * once);
}
TEST_CASE_TEMPLATE_APPLY(bias_twice, AllCases);

TEST_CASE("bias kernels refuse mismatched and empty views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> Y("Y", 3, 4), E("E", 0, 4);
  dchag::View1<double, Space> b("b", 5), b4("b4", 4);
  CHECK_THROWS_WITH_AS(dchag::add_bias(space, Y, b), doctest::Contains("'Y'[3, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_bias(space, Y, b), doctest::Contains("'b'[5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::sum_rows(space, Y, b), doctest::Contains("'Y'[3, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::sum_rows(space, Y, b), doctest::Contains("'b'[5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_bias(space, E, b4), doctest::Contains("'E'[0, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::sum_rows(space, E, b4), doctest::Contains("empty"), dchag::Error);
}
