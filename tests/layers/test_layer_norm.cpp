#include <dchag/layers/layer_norm.hpp>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

Matrix<double> layer_norm_reference(const Matrix<double>& x, const Eigen::VectorXd& w,
                                    const Eigen::VectorXd& b, double eps) {
  Matrix<double> y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double mu = x.row(i).mean();
    const double var = (x.row(i).array() - mu).square().mean();
    y.row(i) = ((x.row(i).array() - mu) / std::sqrt(var + eps)).matrix();
    y.row(i) = y.row(i).cwiseProduct(w.transpose()) + b.transpose();
  }
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("LayerNorm forward matches Eigen", C, ln_layer_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int rows, dim; };
  for (Shape s : {Shape{10, 12}, Shape{1, 1}, Shape{7, 13}, Shape{33, 64}, Shape{3, 5}}) {
    CAPTURE(s.rows);
    CAPTURE(s.dim);
    dchag::LayerNorm<T, Space> ln("norm", s.dim, 1e-5);
    // Freshly constructed: weight 1, bias 0.
    CHECK(to_eigen_vector(ln.weight()).isOnes());
    CHECK(to_eigen_vector(ln.bias()).isZero());
    fill_random(ln.weight(), 1, 0.5, 1.5);
    fill_random(ln.bias(), 2);
    dchag::View2<T, Space> x("x", s.rows, s.dim);
    fill_random(x, 3, -2.0, 3.0);
    auto y = ln.forward(space, x);
    const auto ref = layer_norm_reference(to_eigen(x), to_eigen_vector(ln.weight()),
                                          to_eigen_vector(ln.bias()), 1e-5);
    CHECK(rel_diff(to_eigen(y), ref) < tol<T>());
    // init() restores the defaults.
    ln.init(5);
    CHECK(to_eigen_vector(ln.weight()).isOnes());
    CHECK(to_eigen_vector(ln.bias()).isZero());
  }
  // One layer over changing row counts (buffers follow the shape).
  dchag::LayerNorm<T, Space> ln("norm", 6, 1e-6);
  for (int rows : {4, 9, 4}) {
    dchag::View2<T, Space> x("x", rows, 6);
    fill_random(x, rows);
    const auto ref = layer_norm_reference(to_eigen(x), Eigen::VectorXd::Ones(6),
                                          Eigen::VectorXd::Zero(6), 1e-6);
    CHECK(rel_diff(to_eigen(ln.forward(space, x)), ref) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(ln_layer_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("LayerNorm backward matches finite differences", C, ln_layer_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int rows, dim; };
  for (Shape s : {Shape{10, 12}, Shape{3, 7}, Shape{5, 2}}) {
    CAPTURE(s.rows);
    CAPTURE(s.dim);
    dchag::LayerNorm<T, Space> ln("blocks.0.norm1", s.dim);
    fill_random(ln.weight(), 21, 0.5, 1.5);
    fill_random(ln.bias(), 22);
    dchag::View2<T, Space> x("x", s.rows, s.dim), r("r", s.rows, s.dim);
    fill_random(x, 23);
    fill_random(r, 24);
    auto loss = [&] { return dot(ln.forward(space, x), r); };
    loss();
    auto dx = ln.backward(space, r);
    CHECK(gradient_error(x, dx, loss) < 1e-6);
    dchag::ParameterList<T, Space> params;
    ln.parameters(params);
    REQUIRE(params.size() == 2);
    CHECK(params[0].name == "blocks.0.norm1.weight");
    CHECK(params[1].name == "blocks.0.norm1.bias");
    for (const auto& p : params) {
      CAPTURE(p.name);
      CHECK(p.shape == std::vector<std::size_t>{std::size_t(s.dim)});
      CHECK_FALSE(p.decay);
      CHECK(gradient_error(p.value, p.grad, loss) < 1e-6);
    }
    // Parameter gradients accumulate; input_grad = false returns nothing.
    const double g0 = get_element(ln.grad_weight(), 0);
    loss();
    CHECK(ln.backward(space, r, false).data() == nullptr);
    CHECK(get_element(ln.grad_weight(), 0) == doctest::Approx(2 * g0));
  }
}
TEST_CASE_TEMPLATE_APPLY(ln_layer_bwd, DoubleCases);

TEST_CASE("LayerNorm refuses bad shapes and settings") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::LayerNorm<double, Space> ln("norm", 4);
  dchag::View2<double, Space> x("x", 3, 5);
  CHECK_THROWS_WITH_AS(ln.forward(space, x), doctest::Contains("'x'[3, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(ln.forward(space, x), doctest::Contains("expected 4"), dchag::Error);
  dchag::View2<double, Space> good("good", 3, 4), dy("dy", 2, 4);
  ln.forward(space, good);
  CHECK_THROWS_WITH_AS(ln.backward(space, dy), doctest::Contains("'dy'[2, 4]"), dchag::Error);
  CHECK_THROWS_AS((dchag::LayerNorm<double, Space>("bad", 0)), dchag::Error);
  CHECK_THROWS_AS((dchag::LayerNorm<double, Space>("bad", 4, 0.0)), dchag::Error);
  dchag::LayerNorm<double, Space> unused("unused", 4);
  CHECK_THROWS_AS(unused.backward(space, good), dchag::Error);
}
