#include <dchag/layers/cross_attention.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Per row n and head h: a = softmax(q_h . k_h(c, n) / sqrt(hd)) over the K keys, ctx_h = sum_c
// a_c v_h(c, n); out = Wo ctx + bo. In double, from the layer's parameters.
template <class Attn, class TV>
Matrix<double> cross_attention_reference(const Attn& attn, const TV& tokens) {
  auto x = to_host(tokens);
  const int K = x.extent(0), N = x.extent(1), D = x.extent(2);
  const int H = attn.heads(), hd = attn.head_dim(), I = H * hd;
  const Matrix<double> Win = to_eigen(attn.in_proj_weight());
  const Eigen::VectorXd bin = to_eigen_vector(attn.in_proj_bias());
  const Eigen::VectorXd query = to_eigen_vector(attn.query());
  const Matrix<double> Wo = to_eigen(attn.out_proj().weight());
  const Eigen::VectorXd bo = to_eigen_vector(attn.out_proj_bias());
  const Eigen::VectorXd q = Win.topRows(I) * query + bin.head(I);
  Matrix<double> out(N, D);
  for (int n = 0; n < N; ++n) {
    Eigen::VectorXd ctx = Eigen::VectorXd::Zero(I);
    Matrix<double> keys(K, D);
    for (int c = 0; c < K; ++c)
      for (int d = 0; d < D; ++d) keys(c, d) = x(c, n, d);
    const Matrix<double> k = (keys * Win.middleRows(I, I).transpose()).rowwise() +
                             bin.segment(I, I).transpose();
    const Matrix<double> v = (keys * Win.bottomRows(I).transpose()).rowwise() +
                             bin.tail(I).transpose();
    for (int h = 0; h < H; ++h) {
      Eigen::VectorXd s = k.middleCols(h * hd, hd) * q.segment(h * hd, hd) / std::sqrt(double(hd));
      s = (s.array() - s.maxCoeff()).exp();
      s /= s.sum();
      ctx.segment(h * hd, hd) = v.middleCols(h * hd, hd).transpose() * s;
    }
    out.row(n) = (Wo * ctx + bo).transpose();
  }
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("QueryCrossAttention forward matches Eigen", C, xattn_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int K, N, D, heads, head_dim; };
  for (const Shape s : {Shape{5, 7, 12, 3, 4}, Shape{4, 6, 8, 2, 3}, Shape{1, 3, 6, 1, 6}}) {
    dchag::QueryCrossAttention<T, Space> attn("var_agg", "var_query", s.D, s.heads, s.head_dim);
    attn.init(31);
    fill_random(attn.in_proj_bias(), 32, -0.5, 0.5);
    fill_random(attn.out_proj_bias(), 33);
    // Weights large enough that the attention is far from uniform.
    fill_random(attn.in_proj_weight(), 34);
    dchag::View3<T, Space> x("x", s.K, s.N, s.D);
    fill_random(x, 35);
    auto y = attn.forward(space, x);
    CHECK(rel_diff(to_eigen(y), cross_attention_reference(attn, x)) < tol<T>());
    // The deferred bias, added by the caller, gives the same answer.
    dchag::QueryCrossAttention<T, Space> deferred("var_agg", "var_query", s.D, s.heads,
                                                   s.head_dim, /*defer_out_bias=*/true);
    Kokkos::deep_copy(deferred.query(), attn.query());
    Kokkos::deep_copy(deferred.in_proj_weight(), attn.in_proj_weight());
    Kokkos::deep_copy(deferred.in_proj_bias(), attn.in_proj_bias());
    Kokkos::deep_copy(deferred.out_proj().weight(), attn.out_proj().weight());
    Kokkos::deep_copy(deferred.out_proj_bias(), attn.out_proj_bias());
    auto yd = deferred.forward(space, x);
    deferred.add_output_bias(space, yd);
    CHECK(rel_diff(to_eigen(yd), to_eigen(attn.forward(space, x))) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(xattn_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("QueryCrossAttention backward matches finite differences", C,
                          xattn_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int K = 5, N = 6, D = 8, heads = 2, head_dim = 3;
  dchag::QueryCrossAttention<T, Space> attn("agg", "", D, heads, head_dim);
  attn.init(41);
  fill_random(attn.in_proj_weight(), 42);
  fill_random(attn.in_proj_bias(), 43, -0.5, 0.5);
  fill_random(attn.out_proj_bias(), 44);
  // An O(1) query: with the init's 0.02 the q rows' gradients (dq x query) would be ~1e-4 and
  // finite differences would measure rounding.
  fill_random(attn.query(), 47);
  dchag::View3<T, Space> x("x", K, N, D);
  dchag::View2<T, Space> r("r", N, D);
  fill_random(x, 45);
  fill_random(r, 46);
  auto loss = [&] { return dot(attn.forward(space, x), r); };
  loss();
  auto dx = attn.backward(space, r);
  REQUIRE(dx.extent(0) == std::size_t(K));
  CHECK(gradient_error(x, dx, loss, 40) < 1e-7);
  CHECK(gradient_error(attn.query(), attn.grad_query(), loss) < 1e-7);
  CHECK(gradient_error(attn.in_proj_weight(), attn.grad_in_proj_weight(), loss, 60) < 1e-7);
  CHECK(gradient_error(attn.in_proj_bias(), attn.grad_in_proj_bias(), loss, 40) < 1e-7);
  // Every element of the q rows (one vector's projection, its own kernel).
  const std::size_t q_rows = std::size_t(heads) * head_dim * D;
  dchag::Unmanaged<T*, Space> wq(attn.in_proj_weight().data(), q_rows);
  dchag::Unmanaged<T*, Space> gwq(attn.grad_in_proj_weight().data(), q_rows);
  CHECK(gradient_error(wq, gwq, loss, int(q_rows)) < 1e-7);
  CHECK(gradient_error(attn.out_proj().weight(), attn.out_proj().grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(attn.out_proj_bias(), attn.grad_out_proj_bias(), loss) < 1e-7);
  // Accumulation, and no input gradient when not asked for.
  const double g0 = get_element(attn.grad_query(), 1);
  loss();
  CHECK(attn.backward(space, r, false).size() == 0);
  CHECK(get_element(attn.grad_query(), 1) == doctest::Approx(2 * g0));

  dchag::ParameterList<T, Space> params;
  attn.parameters(params);
  REQUIRE(params.size() == 5);
  CHECK(params[0].name == "agg.query");
  CHECK(params[0].shape == std::vector<std::size_t>{1, 1, std::size_t(D)});
  CHECK(params[1].name == "agg.in_proj_weight");
  CHECK(params[1].shape == std::vector<std::size_t>{3 * heads * head_dim, std::size_t(D)});
  CHECK(params[1].decay);
  CHECK(params[2].name == "agg.in_proj_bias");
  CHECK(params[3].name == "agg.out_proj.weight");
  CHECK(params[3].shape == std::vector<std::size_t>{std::size_t(D), heads * head_dim});
  CHECK(params[4].name == "agg.out_proj.bias");
  CHECK_FALSE(params[4].decay);
}
TEST_CASE_TEMPLATE_APPLY(xattn_bwd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("QueryCrossAttention on a subset of heads holds the slices of the "
                          "whole layer", C, xattn_heads) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const int D = 8, heads = 4, hd = 2;
  dchag::QueryCrossAttention<T, Space> whole("var_agg", "var_query", D, heads, hd);
  dchag::QueryCrossAttention<T, Space> part("var_agg", "var_query", D, 2, hd, true, 1, heads);
  whole.init(17);
  part.init(17);
  auto w = to_host(whole.in_proj_weight());
  auto p = to_host(part.in_proj_weight());
  const int I = heads * hd, Ip = 2 * hd;
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < Ip; ++i)
      for (int d = 0; d < D; ++d) CHECK(p(s * Ip + i, d) == w(s * I + hd + i, d));
  auto wo = to_host(whole.out_proj().weight());
  auto po = to_host(part.out_proj().weight());
  for (int d = 0; d < D; ++d)
    for (int i = 0; i < Ip; ++i) CHECK(po(d, i) == wo(d, hd + i));
  CHECK(to_eigen_vector(part.query()) == to_eigen_vector(whole.query()));
  CHECK_THROWS_AS((dchag::QueryCrossAttention<T, Space>("a", "", D, 2, hd, false, 3, heads)),
                  dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(xattn_heads, AllCases);

TEST_CASE_TEMPLATE_DEFINE("QueryCrossAttention split over heads: the parts' outputs, input "
                          "gradients and query-gradient shares sum to the whole layer's", C,
                          xattn_head_sum) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int D = 8, heads = 4, hd = 2, K = 3, N = 5;
  dchag::QueryCrossAttention<T, Space> whole("var_agg", "var_query", D, heads, hd);
  whole.init(21);
  dchag::View3<T, Space> x("x", K, N, D);
  dchag::View2<T, Space> dy("dy", N, D);
  fill_random(x, 22);
  fill_random(dy, 23);
  fill_random(whole.out_proj_bias(), 24);
  const dchag::ConstTensor3<T, Space> cx(x.data(), K, N, D);
  const Matrix<double> y = to_eigen(whole.forward(space, cx));
  const auto dx = to_host(whole.backward(space, dy));
  CHECK_FALSE(whole.holds_part());
  Matrix<double> y_sum = Matrix<double>::Zero(N, D);
  Eigen::VectorXd dq_sum = Eigen::VectorXd::Zero(D);
  std::vector<double> dx_sum(dx.size(), 0.0);
  for (int begin : {0, 2}) {
    dchag::QueryCrossAttention<T, Space> part("var_agg", "var_query", D, 2, hd, true, begin,
                                              heads);
    part.init(21);
    REQUIRE(part.holds_part());
    y_sum += to_eigen(part.forward(space, cx));
    const auto dxp = to_host(part.backward(space, dy));
    for (std::size_t i = 0; i < dx_sum.size(); ++i) dx_sum[i] += double(dxp.data()[i]);
    dq_sum += to_eigen_vector(part.partial_query_grad());
    // Its own gradient waits for the sum over the ranks.
    CHECK(to_eigen_vector(part.grad_query()).norm() == 0);
    Kokkos::deep_copy(part.partial_query_grad(), whole.grad_query());
    part.accumulate_query_grad(space);
    CHECK(rel_diff(to_eigen_vector(part.grad_query()), to_eigen_vector(whole.grad_query())) ==
          0);
  }
  y_sum.rowwise() += to_eigen_vector(whole.out_proj_bias()).transpose();
  CHECK(rel_diff(y_sum, y) < tol<T>());
  CHECK(rel_diff(dq_sum, to_eigen_vector(whole.grad_query())) < tol<T>());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < dx_sum.size(); ++i) {
    worst = std::max(worst, std::abs(dx_sum[i] - double(dx.data()[i])));
    scale = std::max(scale, std::abs(double(dx.data()[i])));
  }
  CHECK(worst / scale < tol<T>());
  CHECK_THROWS_WITH_AS(whole.partial_query_grad(), doctest::Contains("never partial"),
                       dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(xattn_head_sum, AllCases);

TEST_CASE("QueryCrossAttention refuses bad shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::QueryCrossAttention<double, Space> attn("var_agg", "var_query", 8, 2, 4);
  dchag::View3<double, Space> x("x", 3, 4, 6);
  CHECK_THROWS_WITH_AS(attn.forward(space, x), doctest::Contains("dim = 8"), dchag::Error);
  dchag::View2<double, Space> dy("dy", 4, 8);
  CHECK_THROWS_WITH_AS(attn.backward(space, dy), doctest::Contains("before forward"),
                       dchag::Error);
  CHECK_THROWS_AS((dchag::QueryCrossAttention<double, Space>("a", "q", 8, 0, 4)), dchag::Error);
}
