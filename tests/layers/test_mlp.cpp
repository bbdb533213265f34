#include <dchag/layers/mlp.hpp>

#include <cmath>
#include <utility>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Weights large enough that GELU is exercised away from its linear part near 0.
template <class Layer>
void randomise_mlp(const Layer& mlp, std::uint64_t seed) {
  fill_random(mlp.fc1().weight(), seed, -0.8, 0.8);
  fill_random(mlp.fc1().bias(), seed + 1);
  fill_random(mlp.fc2().weight(), seed + 2, -0.8, 0.8);
  fill_random(mlp.fc2_bias(), seed + 3);
}

template <class Layer, class X>
Matrix<double> mlp_reference(const Layer& mlp, const X& x) {
  Matrix<double> h = to_eigen(x) * to_eigen(mlp.fc1().weight()).transpose();
  h.rowwise() += to_eigen_vector(mlp.fc1().bias()).transpose();
  h = h.unaryExpr([](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); });
  Matrix<double> y = h * to_eigen(mlp.fc2().weight()).transpose();
  y.rowwise() += to_eigen_vector(mlp.fc2_bias()).transpose();
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("Mlp forward matches Eigen", C, mlp_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int rows, dim, hidden; };
  for (Shape s : {Shape{10, 12, 48}, Shape{1, 1, 1}, Shape{7, 5, 13}, Shape{33, 16, 64}}) {
    CAPTURE(s.rows);
    CAPTURE(s.dim);
    CAPTURE(s.hidden);
    dchag::Mlp<T, Space> mlp("mlp", s.dim, s.hidden);
    mlp.init(3);
    randomise_mlp(mlp, 4);
    dchag::View2<T, Space> x("x", s.rows, s.dim);
    fill_random(x, 5);
    auto y = mlp.forward(space, x);
    CHECK(rel_diff(to_eigen(y), mlp_reference(mlp, x)) < tol<T>());
    // A second step with another row count reuses nothing stale.
    dchag::View2<T, Space> x2("x2", s.rows + 3, s.dim);
    fill_random(x2, 6);
    CHECK(rel_diff(to_eigen(mlp.forward(space, x2)), mlp_reference(mlp, x2)) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(mlp_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("Mlp with a deferred fc2 bias", C, mlp_deferred) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::Mlp<T, Space> full("mlp", 6, 10), deferred("mlp", 6, 10, /*defer_fc2_bias=*/true);
  full.init(8);
  deferred.init(8);
  randomise_mlp(full, 9);
  randomise_mlp(deferred, 9);
  CHECK(deferred.defers_fc2_bias());
  dchag::View2<T, Space> x("x", 5, 6);
  fill_random(x, 10);
  const auto ref = to_eigen(full.forward(space, x));
  auto y = deferred.forward(space, x);
  Matrix<double> without = ref;
  without.rowwise() -= to_eigen_vector(deferred.fc2_bias()).transpose();
  CHECK(rel_diff(to_eigen(y), without) < tol<T>());
  deferred.add_output_bias(space, y);
  CHECK(rel_diff(to_eigen(y), ref) < tol<T>());
  // Same parameters, same names, in both modes.
  dchag::ParameterList<T, Space> a, b;
  full.parameters(a);
  deferred.parameters(b);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].name == b[i].name);
}
TEST_CASE_TEMPLATE_APPLY(mlp_deferred, AllCases);

TEST_CASE_TEMPLATE_DEFINE("Mlp backward matches finite differences", C, mlp_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int rows, dim, hidden; };
  for (Shape s : {Shape{10, 12, 48}, Shape{3, 5, 7}}) {
    CAPTURE(s.rows);
    CAPTURE(s.dim);
    dchag::Mlp<T, Space> mlp("blocks.1.mlp", s.dim, s.hidden);
    mlp.init(31);
    randomise_mlp(mlp, 32);
    dchag::View2<T, Space> x("x", s.rows, s.dim), r("r", s.rows, s.dim);
    fill_random(x, 33);
    fill_random(r, 34);
    auto loss = [&] { return dot(mlp.forward(space, x), r); };
    loss();
    auto dx = mlp.backward(space, r);
    CHECK(gradient_error(x, dx, loss) < 1e-6);
    dchag::ParameterList<T, Space> params;
    mlp.parameters(params);
    REQUIRE(params.size() == 4);
    CHECK(params[0].name == "blocks.1.mlp.fc1.weight");
    CHECK(params[0].shape == std::vector<std::size_t>{std::size_t(s.hidden), std::size_t(s.dim)});
    CHECK(params[1].name == "blocks.1.mlp.fc1.bias");
    CHECK(params[2].name == "blocks.1.mlp.fc2.weight");
    CHECK(params[2].shape == std::vector<std::size_t>{std::size_t(s.dim), std::size_t(s.hidden)});
    CHECK(params[3].name == "blocks.1.mlp.fc2.bias");
    CHECK(params[3].shape == std::vector<std::size_t>{std::size_t(s.dim)});
    CHECK(params[0].decay);
    CHECK_FALSE(params[3].decay);
    for (const auto& p : params) {
      CAPTURE(p.name);
      CHECK(gradient_error(p.value, p.grad, loss) < 1e-6);
    }
    CHECK(mlp.flops(s.rows) == doctest::Approx(4.0 * s.rows * s.dim * s.hidden));
  }
}
TEST_CASE_TEMPLATE_APPLY(mlp_bwd, DoubleCases);

TEST_CASE("Mlp refuses bad shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::Mlp<double, Space> mlp("mlp", 4, 8);
  dchag::View2<double, Space> x("x", 3, 5);
  CHECK_THROWS_WITH_AS(mlp.forward(space, x), doctest::Contains("'x'[3, 5]"), dchag::Error);
  dchag::View2<double, Space> good("good", 3, 4), dy("dy", 3, 5);
  mlp.forward(space, good);
  CHECK_THROWS_WITH_AS(mlp.backward(space, dy), doctest::Contains("'dy'[3, 5]"), dchag::Error);
  CHECK_THROWS_AS((dchag::Mlp<double, Space>("bad", 4, 0)), dchag::Error);
}

// Tensor parallelism, simulated in one process: layers holding disjoint hidden units of the
// logical layer initialise to its slices, and their deferred outputs and their input gradients
// sum to the whole layer's.
TEST_CASE_TEMPLATE_DEFINE("Mlp split over hidden units adds up to the whole", C, mlp_tp) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int rows = 7, dim = 6, hidden = 10;
  dchag::Mlp<T, Space> whole("blocks.2.mlp", dim, hidden);
  whole.init(3, 0.5);
  fill_random(whole.fc2_bias(), 4);
  const auto W1 = to_eigen(whole.fc1().weight());
  const auto W2 = to_eigen(whole.fc2().weight());
  dchag::View2<T, Space> x("x", rows, dim), r("r", rows, dim);
  fill_random(x, 5);
  fill_random(r, 6);
  const auto y_whole = to_eigen(whole.forward(space, x));
  const auto dx_whole = to_eigen(whole.backward(space, r));
  const auto g1 = to_eigen(whole.fc1().grad_weight());
  const auto g2 = to_eigen(whole.fc2().grad_weight());
  Matrix<double> y_sum = Matrix<double>::Zero(rows, dim), dx_sum = y_sum;
  for (const auto& share : {std::pair<int, int>{0, 4}, std::pair<int, int>{4, 6}}) {
    const int begin = share.first, count = share.second;
    CAPTURE(begin);
    dchag::Mlp<T, Space> part("blocks.2.mlp", dim, count, true, begin, hidden);
    part.init(3, 0.5);
    Kokkos::deep_copy(part.fc2_bias(), whole.fc2_bias());
    CHECK(rel_diff(to_eigen(part.fc1().weight()), W1.middleRows(begin, count)) == 0);
    CHECK(rel_diff(to_eigen(part.fc2().weight()), W2.middleCols(begin, count)) == 0);
    y_sum += to_eigen(part.forward(space, x));
    dx_sum += to_eigen(part.backward(space, r));
    CHECK(rel_diff(to_eigen(part.fc1().grad_weight()), g1.middleRows(begin, count)) < tol<T>());
    CHECK(rel_diff(to_eigen(part.fc2().grad_weight()), g2.middleCols(begin, count)) < tol<T>());
  }
  y_sum.rowwise() += to_eigen_vector(whole.fc2_bias()).transpose();
  CHECK(rel_diff(y_sum, y_whole) < tol<T>());
  CHECK(rel_diff(dx_sum, dx_whole) < tol<T>());
  CHECK_THROWS_WITH_AS((dchag::Mlp<T, Space>("mlp", dim, 7, true, 4, hidden)),
                       doctest::Contains("do not fit in total_hidden = 10"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(mlp_tp, AllCases);
