#include <dchag/core/error.hpp>
#include <dchag/kernels/softmax.hpp>

#include <cmath>
#include <utility>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
const int row_counts[] = {1, 7, 33};
const int col_counts[] = {1, 5, 64, 129};

// softmax(scale * x) per row, written out in double without the kernel's tricks except the
// max shift (std::exp overflows otherwise on the 1e3 inputs).
Matrix<double> softmax_ref(const Matrix<double>& x, double scale) {
  Matrix<double> y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const Eigen::RowVectorXd s = scale * x.row(i);
    const Eigen::RowVectorXd e = (s.array() - s.maxCoeff()).exp();
    y.row(i) = e / e.sum();
  }
  return y;
}

// dx = J dy per row with the full Jacobian J = diag(y) - y y^T of the softmax.
Matrix<double> softmax_backward_ref(const Matrix<double>& y, const Matrix<double>& dy) {
  Matrix<double> dx(y.rows(), y.cols());
  for (Eigen::Index i = 0; i < y.rows(); ++i) {
    const Eigen::VectorXd yi = y.row(i).transpose();
    const Eigen::MatrixXd J = Eigen::MatrixXd(yi.asDiagonal()) - yi * yi.transpose();
    dx.row(i) = (J * dy.row(i).transpose()).transpose();
  }
  return dx;
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("softmax_rows matches Eigen, with and without scale", C, softmax_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 10;
  for (int rows : row_counts) {
    for (int n : col_counts) {
      for (double scale : {1.0, 0.125, -2.0}) {
        dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n);
        fill_random(X, seed++, -3.0, 3.0);
        if (scale == 1.0)
          dchag::softmax_rows(space, X, Y);
        else
          dchag::softmax_rows(space, X, Y, T(scale));
        CAPTURE(rows);
        CAPTURE(n);
        CAPTURE(scale);
        const Matrix<double> y = to_eigen(Y);
        CHECK(rel_diff(y, softmax_ref(to_eigen(X), scale)) < tol<T>());
        CHECK((y.rowwise().sum().array() - 1.0).abs().maxCoeff() < tol<T>());
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(softmax_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("softmax_rows_backward matches the Jacobian product", C, softmax_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 200;
  for (int rows : row_counts) {
    for (int n : col_counts) {
      dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n), dY("dY", rows, n),
          dX("dX", rows, n);
      fill_random(X, seed++, -2.0, 2.0);
      fill_random(dY, seed++);
      fill_random(dX, seed++);  // must be overwritten, not accumulated into
      dchag::softmax_rows(space, X, Y);
      dchag::softmax_rows_backward(space, Y, dY, dX);
      CAPTURE(rows);
      CAPTURE(n);
      const Matrix<double> ref = softmax_backward_ref(to_eigen(Y), to_eigen(dY));
      CHECK(rel_diff(to_eigen(dX), ref) < tol<T>());
      // In place: dX written over dY.
      dchag::softmax_rows_backward(space, Y, dY, dY);
      CHECK(rel_diff(to_eigen(dY), ref) < tol<T>());
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(softmax_bwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("softmax_rows in place, and stable on inputs of magnitude 1e3", C,
                          softmax_inplace) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 400;
  for (int rows : row_counts) {
    for (int n : col_counts) {
      // A wide spread (near one-hot rows) and a narrow band around 1e3, where exp() of the
      // raw scores overflows even in double.
      for (auto range : {std::pair<double, double>{-1e3, 1e3}, {995.0, 1005.0}}) {
        const double scale = range.first < 0 ? 1.0 : 0.5;
        dchag::View2<T, Space> X("X", rows, n);
        fill_random(X, seed++, range.first, range.second);
        const Matrix<double> x = to_eigen(X);
        dchag::softmax_rows(space, X, X, T(scale));
        const Matrix<double> y = to_eigen(X);
        CAPTURE(rows);
        CAPTURE(n);
        REQUIRE(y.allFinite());
        // The reference sees the same (float-rounded) inputs, and the entries that carry
        // weight lie near the row max, where x - max is exact; so tol() still holds.
        CHECK(rel_diff(y, softmax_ref(x, scale)) < tol<T>());
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(softmax_inplace, AllCases);

TEST_CASE("softmax refuses mismatched and empty views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> X("X", 3, 4), Y("Y", 3, 5), Z("Z", 2, 4), E("E", 0, 4);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows(space, X, Y), doctest::Contains("'X'[3, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows(space, X, Y), doctest::Contains("'Y'[3, 5]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows(space, X, Z, 2.0), doctest::Contains("'Z'[2, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows(space, E, E), doctest::Contains("'E'[0, 4]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows(space, E, E), doctest::Contains("empty"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows_backward(space, X, X, Y),
                       doctest::Contains("'Y'[3, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows_backward(space, X, Z, X),
                       doctest::Contains("'Z'[2, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::softmax_rows_backward(space, X, Z, X),
                       doctest::Contains("'X'[3, 4]"), dchag::Error);
}
