#include <dchag/aggregation/cross_attention_aggregator.hpp>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

TEST_CASE_TEMPLATE_DEFINE("CrossAttentionAggregator runs one cross-attention per group", C,
                          ca_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 3, Gs = 4, N = 5, D = 8, heads = 2;
  dchag::CrossAttentionAggregator<T, Space> agg("agg.0", G, Gs, D, heads, /*group_begin=*/2);
  agg.init(8);
  dchag::View3<T, Space> x("x", G * Gs, N, D);
  fill_random(x, 9);
  auto y = to_host(agg.forward(space, x));
  for (int g = 0; g < G; ++g) {
    const std::string name = "agg.0." + std::to_string(2 + g);
    dchag::QueryCrossAttention<T, Space> ref(name, name + ".query", D, heads, D / heads);
    ref.init(8);
    dchag::ConstTensor3<T, Space> xg(x.data() + std::size_t(g) * Gs * N * D, Gs, N, D);
    const Matrix<double> yr = to_eigen(ref.forward(space, xg));
    double worst = 0;
    for (int n = 0; n < N; ++n)
      for (int d = 0; d < D; ++d) worst = std::max(worst, std::abs(double(y(g, n, d)) - yr(n, d)));
    CHECK(worst == 0.0);
  }
  dchag::ParameterList<T, Space> params;
  agg.parameters(params);
  REQUIRE(params.size() == 5 * G);
  CHECK(params[0].name == "agg.0.2.query");
  CHECK(params[5].name == "agg.0.3.query");
  CHECK(params[14].name == "agg.0.4.out_proj.bias");
}
TEST_CASE_TEMPLATE_APPLY(ca_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("CrossAttentionAggregator backward matches finite differences", C,
                          ca_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int G = 2, Gs = 3, N = 4, D = 6, heads = 3;
  dchag::CrossAttentionAggregator<T, Space> agg("agg.0", G, Gs, D, heads);
  agg.init(1);
  dchag::ParameterList<T, Space> params;
  agg.parameters(params);
  int salt = 0;
  for (auto& p : params) fill_random(p.value, 50 + salt++, -0.7, 0.7);
  dchag::View3<T, Space> x("x", G * Gs, N, D), r("r", G, N, D);
  fill_random(x, 2);
  fill_random(r, 3);
  auto loss = [&] { return dot(agg.forward(space, x), r); };
  loss();
  auto dx = agg.backward(space, r);
  CHECK(gradient_error(x, dx, loss, 40) < 1e-7);
  for (auto& p : params) {
    INFO("parameter ", p.name);
    CHECK(gradient_error(p.value, p.grad, loss, 10) < 1e-7);
  }
  CHECK_THROWS_AS((dchag::CrossAttentionAggregator<T, Space>("agg", 2, 3, 7, 2)), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(ca_bwd, DoubleCases);
