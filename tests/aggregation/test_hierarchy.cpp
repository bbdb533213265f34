#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/hierarchy.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>

#include <algorithm>
#include <cstring>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

template <class V>
Matrix<double> slab(const V& t, int i) {
  auto h = to_host(t);
  Matrix<double> m(h.extent(1), h.extent(2));
  for (std::size_t n = 0; n < h.extent(1); ++n)
    for (std::size_t d = 0; d < h.extent(2); ++d) m(n, d) = h(i, n, d);
  return m;
}

// Finite-difference check of dT and of (a sample of) every parameter of a whole hierarchy.
template <class Agg, class Space>
void check_hierarchy_gradients(Agg& agg, const Space& space, int C, int N, int D) {
  using T = double;
  agg.init(77);
  dchag::ParameterList<T, Space> params;
  agg.parameters(params);
  // Non-zero biases and stronger projections so that every path carries gradient.
  int salt = 0;
  for (auto& p : params) fill_random(p.value, 1000 + salt++, -0.6, 0.6);
  dchag::View3<T, Space> x("x", C, N, D);
  dchag::View2<T, Space> r("r", N, D);
  fill_random(x, 1);
  fill_random(r, 2);
  auto loss = [&] { return dot(agg.forward(space, x), r); };
  loss();
  auto dx = agg.backward(space, r);
  REQUIRE(dx.extent(0) == std::size_t(C));
  CHECK(gradient_error(x, dx, loss, 48, 1e-5) < 1e-7);
  for (auto& p : params) {
    INFO("parameter ", p.name);
    // h = 1e-5: through three levels of softmax some gradients are ~1e-2, and the rounding
    // error of h = 1e-6 differences (~1e-10 absolute) would be 1e-8 relative to them.
    CHECK(gradient_error(p.value, p.grad, loss, 6, 1e-5) < 1e-7);
  }
}

template <template <class, class> class Partial>
void hierarchy_gradients() {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const int C = 16, N = 5, D = 8, heads = 2;
  for (const std::vector<int> levels :
       {std::vector<int>{1}, std::vector<int>{4, 1}, std::vector<int>{8, 2, 1}}) {
    INFO("levels of size ", levels.size());
    dchag::ChannelAggregation<double, Space, Partial> agg(C, D, heads, levels);
    CHECK(agg.partial_levels() == int(levels.size()) - 1);
    CHECK(agg.flops(N) > 0);
    check_hierarchy_gradients(agg, space, C, N, D);
  }
}

}  // namespace

TEST_CASE("ChannelAggregation<Linear> gradients match finite differences") {
  hierarchy_gradients<dchag::LinearAggregator>();
}

TEST_CASE("ChannelAggregation<CrossAttention> gradients match finite differences") {
  hierarchy_gradients<dchag::CrossAttentionAggregator>();
}

TEST_CASE_TEMPLATE_DEFINE("ChannelAggregation with levels {1} is the ClimaX baseline", C,
                          baseline) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int Ch = 6, N = 4, D = 8, heads = 2;
  dchag::ChannelAggregation<T, Space, dchag::LinearAggregator> agg(Ch, D, heads, {1});
  dchag::QueryCrossAttention<T, Space> ref("var_agg", "var_query", D, heads, D / heads);
  agg.init(5);
  ref.init(5);
  dchag::ParameterList<T, Space> pa, pr;
  agg.parameters(pa);
  ref.parameters(pr);
  REQUIRE(pa.size() == 5);
  const char* names[] = {"var_query", "var_agg.in_proj_weight", "var_agg.in_proj_bias",
                         "var_agg.out_proj.weight", "var_agg.out_proj.bias"};
  for (int i = 0; i < 5; ++i) {
    CHECK(pa[i].name == names[i]);
    CHECK(pr[i].name == names[i]);
    CHECK(pa[i].shape == pr[i].shape);
  }
  CHECK(pa[1].shape == std::vector<std::size_t>{3 * std::size_t(D), std::size_t(D)});
  dchag::View3<T, Space> x("x", Ch, N, D);
  fill_random(x, 3);
  auto ya = to_host(agg.forward(space, x));
  auto yr = to_host(ref.forward(space, x));
  CHECK(std::memcmp(ya.data(), yr.data(), ya.size() * sizeof(T)) == 0);
  CHECK(agg.final_keys() == Ch);
}
TEST_CASE_TEMPLATE_APPLY(baseline, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ChannelAggregation names its levels agg.{level}.{group}", C, naming) {
  using Space = typename C::space;
  using T = typename C::scalar;
  dchag::ChannelAggregation<T, Space, dchag::LinearAggregator> lin(16, 8, 2, {8, 2, 1});
  dchag::ParameterList<T, Space> p;
  lin.parameters(p);
  REQUIRE(p.size() == 2 * 8 + 2 * 2 + 5);
  CHECK(p[0].name == "agg.0.0.weight");
  CHECK(p[0].shape == std::vector<std::size_t>{1, 2});
  CHECK(p[15].name == "agg.0.7.bias");
  CHECK(p[16].name == "agg.1.0.weight");
  CHECK(p[16].shape == std::vector<std::size_t>{1, 4});
  CHECK(p[20].name == "var_query");
  CHECK(lin.group_sizes() == std::vector<int>{2, 4, 2});
  CHECK(lin.final_keys() == 2);

  dchag::ChannelAggregation<T, Space, dchag::CrossAttentionAggregator> ca(16, 8, 2, {4, 1});
  dchag::ParameterList<T, Space> q;
  ca.parameters(q);
  REQUIRE(q.size() == 5 * 4 + 5);
  CHECK(q[0].name == "agg.0.0.query");
  CHECK(q[1].name == "agg.0.0.in_proj_weight");
  CHECK(q[19].name == "agg.0.3.out_proj.bias");
  CHECK(q[20].name == "var_query");
}
TEST_CASE_TEMPLATE_APPLY(naming, AllCases);

// Two simulated ranks of a TP group: each runs the partial levels on its half of the channels,
// the group tokens are "all-gathered" by concatenation, and the final aggregator runs on all of
// them. Result and gradients equal the single-rank hierarchy.
template <template <class, class> class Partial, class T, class Space>
void two_rank_split() {
  Space space;
  const int Ch = 16, N = 3, D = 8, heads = 2;
  const std::vector<int> levels{8, 2, 1};
  using Agg = dchag::ChannelAggregation<T, Space, Partial>;
  Agg whole(Ch, D, heads, levels);
  whole.init(9);
  Agg rank[2] = {Agg(Ch, D, heads, levels, {0, 8}), Agg(Ch, D, heads, levels, {8, 8})};
  for (auto& r : rank) r.init(9);
  CHECK(rank[1].token_begin(1) == 4);
  CHECK(rank[1].token_begin(2) == 1);
  CHECK(rank[1].token_count(2) == 1);

  // The owned groups are the whole model's groups: same names, same initial values.
  dchag::ParameterList<T, Space> pw, p1;
  whole.parameters(pw);
  rank[1].parameters(p1);
  for (const auto& p : p1) {
    const auto it = std::find_if(pw.begin(), pw.end(), [&](const auto& q) { return q.name == p.name; });
    REQUIRE(it != pw.end());
    CHECK(to_eigen_vector(p.value) == to_eigen_vector(it->value));
  }

  dchag::View3<T, Space> x("x", Ch, N, D), gathered("gathered", 2, N, D);
  fill_random(x, 4);
  const std::size_t half = std::size_t(8) * N * D, one = std::size_t(N) * D;
  for (int k = 0; k < 2; ++k) {
    dchag::ConstTensor3<T, Space> mine(x.data() + k * half, 8, N, D);
    auto groups = rank[k].partial_forward(space, mine);
    REQUIRE(groups.extent(0) == 1);
    Kokkos::deep_copy(dchag::Tensor3<T, Space>(gathered.data() + k * one, 1, N, D), groups);
  }
  auto y = rank[0].final_forward(space, gathered);
  auto yw = whole.forward(space, x);
  CHECK(rel_diff(to_eigen(y), to_eigen(yw)) < tol<T>());

  dchag::View2<T, Space> r("r", N, D);
  fill_random(r, 5);
  auto dxw = whole.backward(space, r);
  auto dg = rank[0].final_backward(space, r);
  for (int k = 0; k < 2; ++k) {
    dchag::ConstTensor3<T, Space> own(dg.data() + k * one, 1, N, D);
    auto dx = rank[k].partial_backward(space, own);
    for (int c = 0; c < 8; ++c) CHECK(rel_diff(slab(dx, c), slab(dxw, 8 * k + c)) < tol<T>());
  }
}

TEST_CASE_TEMPLATE_DEFINE("ChannelAggregation split over two ranks equals the whole", C, split) {
  two_rank_split<dchag::LinearAggregator, typename C::scalar, typename C::space>();
  two_rank_split<dchag::CrossAttentionAggregator, typename C::scalar, typename C::space>();
}
TEST_CASE_TEMPLATE_APPLY(split, AllCases);

TEST_CASE("ChannelAggregation refuses levels that do not divide") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Lin = dchag::ChannelAggregation<double, Space, dchag::LinearAggregator>;
  using CA = dchag::ChannelAggregation<double, Space, dchag::CrossAttentionAggregator>;
  CHECK_THROWS_WITH_AS(Lin(12, 8, 2, {5, 1}), doctest::Contains("C = 12"), dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(12, 8, 2, {5, 1}),
                       doctest::Contains("level 0 must reduce 12 tokens to a divisor of 12"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(12, 8, 2, {5, 1}), doctest::Contains("got 5"), dchag::Error);
  CHECK_THROWS_WITH_AS(CA(16, 8, 2, {8, 3, 1}), doctest::Contains("level 1 must reduce 8"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(16, 8, 2, {4, 2}),
                       doctest::Contains("last level must reduce to 1 token per patch, got 2"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(16, 8, 2, {}), doctest::Contains("no levels"), dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(16, 8, 3, {1}), doctest::Contains("heads = 3"), dchag::Error);
  // A rank's channels must be whole groups at every partial level.
  CHECK_THROWS_WITH_AS(Lin(16, 8, 2, {8, 2, 1}, {3, 13}), doctest::Contains("[3, 16)"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(Lin(16, 8, 2, {8, 2, 1}, {4, 4}),
                       doctest::Contains("[2, 4) of level 1 do not cover whole groups of 4"),
                       dchag::Error);
  Lin part(16, 8, 2, {4, 1}, {0, 8});
  dchag::View3<double, Space> x("x", 16, 2, 8);
  CHECK_THROWS_WITH_AS(part.forward(Space(), x), doctest::Contains("owns 8 of 16"), dchag::Error);
}
