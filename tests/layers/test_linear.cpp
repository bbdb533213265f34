#include <dchag/layers/linear.hpp>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

TEST_CASE_TEMPLATE_DEFINE("Linear forward matches Eigen", C, linear_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  for (bool bias : {true, false}) {
    dchag::Linear<T, Space> lin("fc", 7, 5, bias);
    lin.init(3);
    if (bias) fill_random(lin.bias(), 4);
    dchag::View2<T, Space> x("x", 11, 7);
    fill_random(x, 5);
    auto y = lin.forward(space, x);
    Matrix<double> ref = to_eigen(x) * to_eigen(lin.weight()).transpose();
    if (bias) ref.rowwise() += to_eigen_vector(lin.bias()).transpose();
    CHECK(rel_diff(to_eigen(y), ref) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(linear_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("Linear backward matches finite differences", C, linear_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::Linear<T, Space> lin("fc", 6, 9);
  lin.init(11);
  fill_random(lin.bias(), 12);
  dchag::View2<T, Space> x("x", 5, 6), r("r", 5, 9);
  fill_random(x, 13);
  fill_random(r, 14);
  auto loss = [&] { return dot(lin.forward(space, x), r); };
  loss();
  auto dx = lin.backward(space, r);
  CHECK(gradient_error(x, dx, loss) < 1e-7);
  CHECK(gradient_error(lin.weight(), lin.grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(lin.bias(), lin.grad_bias(), loss) < 1e-7);
  // Parameter gradients accumulate across backward calls.
  const double g0 = get_element(lin.grad_weight(), 3);
  loss();
  lin.backward(space, r, false);
  CHECK(get_element(lin.grad_weight(), 3) == doctest::Approx(2 * g0));
  dchag::ParameterList<T, Space> params;
  lin.parameters(params);
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "fc.weight");
  CHECK(params[0].shape == std::vector<std::size_t>{9, 6});
  CHECK(params[0].decay);
  CHECK_FALSE(params[1].decay);
}
TEST_CASE_TEMPLATE_APPLY(linear_bwd, DoubleCases);

TEST_CASE("Linear refuses inputs of the wrong width") {
  using Space = Kokkos::DefaultExecutionSpace;
  dchag::Linear<double, Space> lin("head", 4, 3);
  dchag::View2<double, Space> x("x", 2, 5);
  CHECK_THROWS_WITH_AS(lin.forward(Space(), x), doctest::Contains("expected 4"), dchag::Error);
  using Lin = dchag::Linear<double, Space>;
  CHECK_THROWS_AS(Lin("bad", 0, 3), dchag::Error);
}
