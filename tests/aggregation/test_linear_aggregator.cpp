#include <dchag/aggregation/linear_aggregator.hpp>

#include <algorithm>
#include <cmath>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {
// out[g, n, :] = sum_c w[g, c] T[g*Gs + c, n, :] + b[g], in double.
template <class Agg, class TV>
std::vector<Matrix<double>> linear_aggregation_reference(const Agg& agg, const TV& tokens) {
  auto x = to_host(tokens);
  auto w = to_host(agg.weight());
  auto b = to_host(agg.bias());
  const int G = agg.groups(), Gs = agg.group_size(), N = x.extent(1), D = x.extent(2);
  std::vector<Matrix<double>> out(G, Matrix<double>::Constant(N, D, 0.0));
  for (int g = 0; g < G; ++g)
    for (int n = 0; n < N; ++n)
      for (int d = 0; d < D; ++d) {
        double s = b(g);
        for (int c = 0; c < Gs; ++c) s += double(w(g, c)) * double(x(g * Gs + c, n, d));
        out[g](n, d) = s;
      }
  return out;
}

template <class V>
Matrix<double> slab(const V& t, int i) {
  auto h = to_host(t);
  Matrix<double> m(h.extent(1), h.extent(2));
  for (std::size_t n = 0; n < h.extent(1); ++n)
    for (std::size_t d = 0; d < h.extent(2); ++d) m(n, d) = h(i, n, d);
  return m;
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("LinearAggregator with weights 1/Cg is the group mean", C, lin_mean) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 3, Gs = 4, N = 5, D = 6;
  dchag::LinearAggregator<T, Space> agg("agg.0", G, Gs, D);
  Kokkos::deep_copy(agg.weight(), T(1) / T(Gs));
  Kokkos::deep_copy(agg.bias(), T(0));
  dchag::View3<T, Space> x("x", G * Gs, N, D);
  fill_random(x, 1);
  auto y = agg.forward(space, x);
  for (int g = 0; g < G; ++g) {
    Matrix<double> mean = Matrix<double>::Zero(N, D);
    for (int c = 0; c < Gs; ++c) mean += slab(x, g * Gs + c);
    mean /= Gs;
    CHECK(rel_diff(slab(y, g), mean) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(lin_mean, AllCases);

TEST_CASE_TEMPLATE_DEFINE("LinearAggregator forward matches the reference", C, lin_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 2, Gs = 3, N = 7, D = 5;
  dchag::LinearAggregator<T, Space> agg("agg.1", G, Gs, D, 1, /*group_begin=*/4);
  agg.init(3);
  fill_random(agg.weight(), 4);
  fill_random(agg.bias(), 5);
  dchag::View3<T, Space> x("x", G * Gs, N, D);
  fill_random(x, 6);
  auto y = agg.forward(space, x);
  const auto ref = linear_aggregation_reference(agg, x);
  for (int g = 0; g < G; ++g) CHECK(rel_diff(slab(y, g), ref[g]) < tol<T>());

  dchag::ParameterList<T, Space> params;
  agg.parameters(params);
  REQUIRE(params.size() == 4);
  CHECK(params[0].name == "agg.1.4.weight");
  CHECK(params[0].shape == std::vector<std::size_t>{1, std::size_t(Gs)});
  CHECK(params[0].decay);
  CHECK(params[3].name == "agg.1.5.bias");
  CHECK(params[3].shape == std::vector<std::size_t>{1});
  CHECK_FALSE(params[3].decay);
  CHECK(agg.flops(N) == doctest::Approx(2.0 * G * Gs * N * D));
}
TEST_CASE_TEMPLATE_APPLY(lin_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("LinearAggregator init depends only on the global group", C, lin_init) {
  using Space = typename C::space;
  using T = typename C::scalar;
  dchag::LinearAggregator<T, Space> full("agg.0", 4, 3, 8), part("agg.0", 2, 3, 8, 1, 2);
  full.init(12);
  part.init(12);
  auto wf = to_host(full.weight());
  auto wp = to_host(part.weight());
  for (int g = 0; g < 2; ++g)
    for (int c = 0; c < 3; ++c) CHECK(wp(g, c) == wf(g + 2, c));
}
TEST_CASE_TEMPLATE_APPLY(lin_init, AllCases);

TEST_CASE_TEMPLATE_DEFINE("LinearAggregator backward matches finite differences", C, lin_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 3, Gs = 2, N = 4, D = 5;
  dchag::LinearAggregator<T, Space> agg("agg.0", G, Gs, D);
  agg.init(1);
  fill_random(agg.weight(), 2);
  fill_random(agg.bias(), 3);
  dchag::View3<T, Space> x("x", G * Gs, N, D), r("r", G, N, D);
  fill_random(x, 4);
  fill_random(r, 5);
  auto loss = [&] { return dot(agg.forward(space, x), r); };
  loss();
  auto dx = agg.backward(space, r);
  CHECK(gradient_error(x, dx, loss, 40) < 1e-7);
  CHECK(gradient_error(agg.weight(), agg.grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(agg.bias(), agg.grad_bias(), loss) < 1e-7);
  const double g0 = get_element(agg.grad_bias(), 1);
  loss();
  CHECK(agg.backward(space, r, false).size() == 0);
  CHECK(get_element(agg.grad_bias(), 1) == doctest::Approx(2 * g0));
}
TEST_CASE_TEMPLATE_APPLY(lin_bwd, DoubleCases);

// Token slices of N*D = 2220 elements: several row segments and a long interleaved sum, which
// the finite-difference test's small shapes never reach.
TEST_CASE_TEMPLATE_DEFINE("LinearAggregator on long token slices matches Eigen", C, lin_long) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 2, Gs = 3, N = 37, D = 60;
  dchag::LinearAggregator<T, Space> agg("agg.0", G, Gs, D);
  fill_random(agg.weight(), 21);
  fill_random(agg.bias(), 22);
  dchag::View3<T, Space> x("x", G * Gs, N, D), dy("dy", G, N, D);
  fill_random(x, 23);
  fill_random(dy, 24);
  const auto y = agg.forward(space, x);
  const auto ref = linear_aggregation_reference(agg, x);
  for (int g = 0; g < G; ++g) CHECK(rel_diff(slab(y, g), ref[g]) < tol<T>());
  const auto dx = agg.backward(space, dy);
  const Matrix<double> w = to_eigen(agg.weight());
  Matrix<double> gw(G, Gs);
  Eigen::VectorXd gb(G);
  for (int g = 0; g < G; ++g) {
    const Matrix<double> d = slab(dy, g);
    gb(g) = d.sum();
    for (int c = 0; c < Gs; ++c) {
      gw(g, c) = d.cwiseProduct(slab(x, g * Gs + c)).sum();
      CHECK(rel_diff(slab(dx, g * Gs + c), w(g, c) * d) < tol<T>());
    }
  }
  CHECK(rel_diff(to_eigen(agg.grad_weight()), gw) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(agg.grad_bias()), gb) < tol<T>());
}
TEST_CASE_TEMPLATE_APPLY(lin_long, AllCases);

// The stem's path: the input gradient written over the tokens it came from, with every
// gradient as the ordinary backward computes it into a buffer of its own.
TEST_CASE_TEMPLATE_DEFINE("LinearAggregator backward_in_place equals backward", C, lin_inplace) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 3, Gs = 4, N = 7, D = 5;
  dchag::LinearAggregator<T, Space> a("agg.0", G, Gs, D), b("agg.0", G, Gs, D);
  a.init(3);
  b.init(3);
  dchag::View3<T, Space> x("x", G * Gs, N, D), x2("x2", G * Gs, N, D), dout("dout", G, N, D);
  fill_random(x, 1);
  fill_random(dout, 2);
  Kokkos::deep_copy(x2, x);
  a.forward(space, x);
  b.forward(space, x2);
  const auto dx = to_host(a.backward(space, dout));
  b.backward_in_place(space, dout, dchag::Unmanaged<T***, Space>(x2.data(), G * Gs, N, D));
  const auto dx2 = to_host(x2);
  double worst = 0;
  for (std::size_t i = 0; i < dx.size(); ++i)
    worst = std::max(worst, double(std::abs(dx.data()[i] - dx2.data()[i])));
  CHECK(worst == 0.0);
  const auto gw = to_host(a.grad_weight()), gw2 = to_host(b.grad_weight());
  const auto gb = to_host(a.grad_bias()), gb2 = to_host(b.grad_bias());
  for (std::size_t i = 0; i < gw.size(); ++i) CHECK(gw.data()[i] == gw2.data()[i]);
  for (std::size_t i = 0; i < gb.size(); ++i) CHECK(gb.data()[i] == gb2.data()[i]);
  // Only the tokens of the last forward may be overwritten.
  dchag::View3<T, Space> other("other", G * Gs, N, D);
  CHECK_THROWS_WITH_AS(
      b.backward_in_place(space, dout, dchag::Unmanaged<T***, Space>(other.data(), G * Gs, N, D)),
      doctest::Contains("not the tokens of the last forward()"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(lin_inplace, AllCases);

TEST_CASE("LinearAggregator refuses inputs that are not its groups") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::LinearAggregator<double, Space> agg("agg.0", 2, 3, 4);
  dchag::View3<double, Space> x("x", 5, 2, 4);
  CHECK_THROWS_WITH_AS(agg.forward(space, x), doctest::Contains("2 groups x 3 = 6"),
                       dchag::Error);
  CHECK_THROWS_AS((dchag::LinearAggregator<double, Space>("agg", 2, 0, 4)), dchag::Error);
}
