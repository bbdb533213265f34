#include <dchag/core/error.hpp>
#include <dchag/kernels/layer_norm.hpp>

#include <cmath>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
const int row_counts[] = {1, 7, 33};
const int col_counts[] = {1, 5, 64, 129};
const double eps = 1e-5;

struct Reference {
  Matrix<double> y, xhat;
  Eigen::VectorXd mean, rstd;
};

// torch.nn.LayerNorm in double: biased variance over each row.
Reference layer_norm_ref(const Matrix<double>& x, const Eigen::VectorXd& gamma,
                         const Eigen::VectorXd& beta) {
  const Eigen::Index rows = x.rows(), n = x.cols();
  Reference r{Matrix<double>(rows, n), Matrix<double>(rows, n), Eigen::VectorXd(rows),
              Eigen::VectorXd(rows)};
  for (Eigen::Index i = 0; i < rows; ++i) {
    r.mean(i) = x.row(i).mean();
    const double var = (x.row(i).array() - r.mean(i)).square().sum() / double(n);
    r.rstd(i) = 1.0 / std::sqrt(var + eps);
    r.xhat.row(i) = (x.row(i).array() - r.mean(i)) * r.rstd(i);
    r.y.row(i) = r.xhat.row(i).array() * gamma.transpose().array() + beta.transpose().array();
  }
  return r;
}

// dx = J^T (dy * gamma) per row, with the Jacobian of xhat = (x - mean) * rstd written out:
// d xhat_j / d x_k = rstd (delta_jk - 1/n - xhat_j xhat_k / n) (symmetric).
Matrix<double> layer_norm_dx_ref(const Reference& r, const Eigen::VectorXd& gamma,
                                 const Matrix<double>& dy) {
  const Eigen::Index n = dy.cols();
  Matrix<double> dx(dy.rows(), n);
  for (Eigen::Index i = 0; i < dy.rows(); ++i) {
    const Eigen::VectorXd xh = r.xhat.row(i).transpose();
    const Eigen::MatrixXd J =
        r.rstd(i) * (Eigen::MatrixXd::Identity(n, n) - Eigen::MatrixXd::Constant(n, n, 1.0 / n) -
                     xh * xh.transpose() / double(n));
    const Eigen::VectorXd g = dy.row(i).transpose().cwiseProduct(gamma);
    dx.row(i) = (J.transpose() * g).transpose();
  }
  return dx;
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("layer_norm forward matches Eigen, statistics included", C, ln_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 20;
  for (int rows : row_counts) {
    for (int n : col_counts) {
      dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n);
      dchag::View1<T, Space> gamma("gamma", n), beta("beta", n), mean("mean", rows),
          rstd("rstd", rows);
      // An offset mean, so that forgetting to subtract it cannot pass.
      fill_random(X, seed++, 1.0, 3.0);
      fill_random(gamma, seed++, 0.5, 1.5);
      fill_random(beta, seed++);
      dchag::layer_norm(space, X, gamma, beta, T(eps), Y, mean, rstd);
      const Reference r =
          layer_norm_ref(to_eigen(X), to_eigen_vector(gamma), to_eigen_vector(beta));
      CAPTURE(rows);
      CAPTURE(n);
      CHECK(rel_diff(to_eigen(Y), r.y) < tol<T>());
      CHECK(rel_diff(to_eigen_vector(mean), r.mean) < tol<T>());
      // n = 1 has zero variance and rstd = 1/sqrt(eps) ~ 316: compare relatively.
      CHECK((to_eigen_vector(rstd) - r.rstd).cwiseQuotient(r.rstd).cwiseAbs().maxCoeff() <
            tol<T>());
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(ln_fwd, AllCases);

namespace {
// layer_norm_backward on one random [rows, n] problem against the Jacobian and column sums.
template <class T, class Space>
void check_ln_backward(int rows, int n, std::uint64_t& seed) {
  Space space;
  dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n), dY("dY", rows, n),
      dX("dX", rows, n);
  dchag::View1<T, Space> gamma("gamma", n), beta("beta", n), mean("mean", rows),
      rstd("rstd", rows), dgamma("dgamma", n), dbeta("dbeta", n);
  fill_random(X, seed++, -2.0, 1.0);
  fill_random(gamma, seed++, 0.5, 1.5);
  fill_random(beta, seed++);
  fill_random(dY, seed++);
  fill_random(dX, seed++);  // must be overwritten
  fill_random(dgamma, seed++);  // must be added to
  fill_random(dbeta, seed++);
  const Eigen::VectorXd dgamma0 = to_eigen_vector(dgamma), dbeta0 = to_eigen_vector(dbeta);
  dchag::layer_norm(space, X, gamma, beta, T(eps), Y, mean, rstd);
  dchag::layer_norm_backward(space, X, gamma, mean, rstd, dY, dX, dgamma, dbeta);

  const Eigen::VectorXd g = to_eigen_vector(gamma);
  const Reference r = layer_norm_ref(to_eigen(X), g, to_eigen_vector(beta));
  const Matrix<double> dy = to_eigen(dY);
  const Matrix<double> dx_ref = layer_norm_dx_ref(r, g, dy);
  const Eigen::VectorXd dgamma_ref = dy.cwiseProduct(r.xhat).colwise().sum().transpose();
  const Eigen::VectorXd dbeta_ref = dy.colwise().sum().transpose();
  CAPTURE(rows);
  CAPTURE(n);
  CHECK(rel_diff(to_eigen(dX), dx_ref) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(dgamma), dgamma0 + dgamma_ref) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(dbeta), dbeta0 + dbeta_ref) < tol<T>());

  // A second call adds the same gradients again; dX is written over dY this time.
  dchag::layer_norm_backward(space, X, gamma, mean, rstd, dY, dY, dgamma, dbeta);
  CHECK(rel_diff(to_eigen(dY), dx_ref) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(dgamma), dgamma0 + 2.0 * dgamma_ref) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(dbeta), dbeta0 + 2.0 * dbeta_ref) < tol<T>());
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("layer_norm_backward matches the Jacobian; parameter grads accumulate",
                          C, ln_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  std::uint64_t seed = 300;
  for (int rows : row_counts)
    for (int n : col_counts) check_ln_backward<T, Space>(rows, n, seed);
}
TEST_CASE_TEMPLATE_APPLY(ln_bwd, AllCases);

// Rows wider than one column chunk of the parameter gradients (host backends give a chunk up
// to 1024 columns, fewer with more threads), with a partial last chunk.
TEST_CASE_TEMPLATE_DEFINE("layer_norm_backward on rows of several column chunks", C, ln_wide) {
  using Space = typename C::space;
  using T = typename C::scalar;
  std::uint64_t seed = 700;
  for (int n : {300, 1100}) check_ln_backward<T, Space>(3, n, seed);
}
TEST_CASE_TEMPLATE_APPLY(ln_wide, AllCases);

TEST_CASE_TEMPLATE_DEFINE("layer_norm parameter grads start from zero and double", C, ln_acc) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int rows = 33, n = 129;
  dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n), dY("dY", rows, n), dX("dX", rows, n);
  dchag::View1<T, Space> gamma("gamma", n), beta("beta", n), mean("mean", rows),
      rstd("rstd", rows), dgamma("dgamma", n), dbeta("dbeta", n);
  fill_random(X, 1);
  fill_random(gamma, 2);
  fill_random(beta, 3);
  fill_random(dY, 4);
  dchag::layer_norm(space, X, gamma, beta, T(eps), Y, mean, rstd);
  dchag::layer_norm_backward(space, X, gamma, mean, rstd, dY, dX, dgamma, dbeta);
  const Eigen::VectorXd once_g = to_eigen_vector(dgamma), once_b = to_eigen_vector(dbeta);
  dchag::layer_norm_backward(space, X, gamma, mean, rstd, dY, dX, dgamma, dbeta);
  // x + x is exact in floating point, and the sums run in a fixed order.
  CHECK(to_eigen_vector(dgamma) == 2.0 * once_g);
  CHECK(to_eigen_vector(dbeta) == 2.0 * once_b);
}
TEST_CASE_TEMPLATE_APPLY(ln_acc, AllCases);

TEST_CASE("layer_norm_backward agrees with central finite differences of the forward") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const int rows = 3, n = 7;
  dchag::View2<double, Space> X("X", rows, n), Y("Y", rows, n), W("W", rows, n),
      dX("dX", rows, n);
  dchag::View1<double, Space> gamma("gamma", n), beta("beta", n), mean("mean", rows),
      rstd("rstd", rows), dgamma("dgamma", n), dbeta("dbeta", n);
  fill_random(X, 5);
  fill_random(gamma, 6, 0.5, 1.5);
  fill_random(beta, 7);
  fill_random(W, 8);  // loss = sum(W * Y), so dY = W
  const Matrix<double> w = to_eigen(W);
  auto loss = [&](const Matrix<double>& x) {
    auto h = Kokkos::create_mirror_view(X);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < n; ++j) h(i, j) = x(i, j);
    Kokkos::deep_copy(X, h);
    dchag::layer_norm(space, X, gamma, beta, eps, Y, mean, rstd);
    return to_eigen(Y).cwiseProduct(w).sum();
  };
  const Matrix<double> x0 = to_eigen(X);
  Matrix<double> fd(rows, n);
  const double h = 1e-5;
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < n; ++j) {
      Matrix<double> xp = x0, xm = x0;
      xp(i, j) += h;
      xm(i, j) -= h;
      fd(i, j) = (loss(xp) - loss(xm)) / (2 * h);
    }
  }
  loss(x0);  // restores X, mean and rstd
  dchag::layer_norm_backward(space, X, gamma, mean, rstd, W, dX, dgamma, dbeta);
  // Central differences carry O(h^2) truncation and O(1e-16 / h) cancellation error.
  CHECK(rel_diff(to_eigen(dX), fd) < 1e-8);
}

TEST_CASE("layer_norm refuses mismatched and empty views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> X("X", 3, 4), Y("Y", 3, 5), E("E", 0, 4);
  dchag::View1<double, Space> g("g", 4), b("b", 4), g5("g5", 5), m("m", 3), r("r", 3),
      m2("m2", 2);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, X, g, b, 1e-5, Y, m, r),
                       doctest::Contains("'X'[3, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, X, g, b, 1e-5, Y, m, r),
                       doctest::Contains("'Y'[3, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, X, g5, b, 1e-5, X, m, r),
                       doctest::Contains("'g5'[5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, X, g, b, 1e-5, X, m2, r),
                       doctest::Contains("'m2'[2]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, X, g, b, 1e-5, X, m2, r),
                       doctest::Contains("'X'[3, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm(space, E, g, b, 1e-5, E, m, r),
                       doctest::Contains("'E'[0, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm_backward(space, X, g, m, r, X, X, g5, b),
                       doctest::Contains("'g5'[5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm_backward(space, X, g, m, r, X, Y, g, b),
                       doctest::Contains("'Y'[3, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::layer_norm_backward(space, E, g, m, r, E, E, g, b),
                       doctest::Contains("empty"), dchag::Error);
}
