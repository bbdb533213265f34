#include <dchag/layers/self_attention.hpp>

#include <cmath>
#include <utility>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

struct AttnShape {
  int batch, L, dim, heads, head_dim;
};

// B=2, L=5, dim=12, heads=3 first; then odd sizes, a single token, a single head, and inner
// widths other than dim (a tensor-parallel rank's share of the heads, and BEiT-style wide heads).
const AttnShape attn_shapes[] = {{2, 5, 12, 3, 4}, {3, 7, 10, 2, 5}, {1, 1, 6, 2, 3},
                                 {2, 9, 5, 1, 5},  {2, 5, 12, 2, 3}, {1, 4, 6, 3, 4}};

// Large enough weights that the softmax is far from uniform.
template <class Layer>
void randomise_attention(const Layer& attn, std::uint64_t seed) {
  fill_random(attn.qkv().weight(), seed, -0.7, 0.7);
  fill_random(attn.qkv().bias(), seed + 1);
  fill_random(attn.proj().weight(), seed + 2, -0.7, 0.7);
  fill_random(attn.proj_bias(), seed + 3);
}

// Per sample and head, softmax(Q K^T / sqrt(d)) V, written out independently of the library.
template <class Layer, class X>
Matrix<double> attention_reference(const Layer& attn, const X& x, int batch, int L) {
  const int heads = attn.heads(), d = attn.head_dim(), inner = heads * d;
  Matrix<double> qkv = to_eigen(x) * to_eigen(attn.qkv().weight()).transpose();
  qkv.rowwise() += to_eigen_vector(attn.qkv().bias()).transpose();
  Matrix<double> merged(batch * L, inner);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      const Matrix<double> Q = qkv.block(b * L, 0 * inner + h * d, L, d);
      const Matrix<double> K = qkv.block(b * L, 1 * inner + h * d, L, d);
      const Matrix<double> V = qkv.block(b * L, 2 * inner + h * d, L, d);
      Matrix<double> S = Q * K.transpose() / std::sqrt(double(d));
      for (int i = 0; i < L; ++i) {
        const double m = S.row(i).maxCoeff();
        S.row(i) = (S.row(i).array() - m).exp().matrix();
        S.row(i) /= S.row(i).sum();
      }
      merged.block(b * L, h * d, L, d) = S * V;
    }
  Matrix<double> y = merged * to_eigen(attn.proj().weight()).transpose();
  y.rowwise() += to_eigen_vector(attn.proj_bias()).transpose();
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("SelfAttention forward matches Eigen", C, attn_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  for (const AttnShape s : attn_shapes) {
    CAPTURE(s.batch);
    CAPTURE(s.L);
    CAPTURE(s.dim);
    CAPTURE(s.heads);
    CAPTURE(s.head_dim);
    dchag::SelfAttention<T, Space> attn("attn", s.dim, s.heads, s.head_dim);
    attn.init(1);
    randomise_attention(attn, 2);
    dchag::View2<T, Space> x("x", s.batch * s.L, s.dim);
    fill_random(x, 3);
    auto y = attn.forward(space, x, s.batch, s.L);
    CHECK(rel_diff(to_eigen(y), attention_reference(attn, x, s.batch, s.L)) < tol<T>());
    // The same layer on another (batch, L): buffers follow the shape.
    dchag::View2<T, Space> x2("x2", (s.batch + 1) * (s.L + 2), s.dim);
    fill_random(x2, 4);
    auto y2 = attn.forward(space, x2, s.batch + 1, s.L + 2);
    CHECK(rel_diff(to_eigen(y2), attention_reference(attn, x2, s.batch + 1, s.L + 2)) <
          tol<T>());
    const double f = 2.0 * (s.batch * s.L) * s.dim * 4 * (s.heads * s.head_dim) +
                     4.0 * s.batch * s.heads * s.L * s.L * s.head_dim;
    CHECK(attn.flops(s.batch, s.L) == doctest::Approx(f));
  }
}
TEST_CASE_TEMPLATE_APPLY(attn_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("SelfAttention with a deferred proj bias", C, attn_deferred) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::SelfAttention<T, Space> full("attn", 12, 3, 4),
      deferred("attn", 12, 3, 4, /*defer_proj_bias=*/true);
  randomise_attention(full, 5);
  randomise_attention(deferred, 5);
  dchag::View2<T, Space> x("x", 10, 12), r("r", 10, 12);
  fill_random(x, 6);
  fill_random(r, 7);
  const auto ref = to_eigen(full.forward(space, x, 2, 5));
  auto y = deferred.forward(space, x, 2, 5);
  Matrix<double> without = ref;
  without.rowwise() -= to_eigen_vector(deferred.proj_bias()).transpose();
  CHECK(rel_diff(to_eigen(y), without) < tol<T>());
  deferred.add_output_bias(space, y);
  CHECK(rel_diff(to_eigen(y), ref) < tol<T>());
  // The backward does not depend on the mode.
  const auto dx_full = to_eigen(full.backward(space, r));
  const auto dx_deferred = to_eigen(deferred.backward(space, r));
  CHECK(rel_diff(dx_deferred, dx_full) < tol<T>());
  CHECK(rel_diff(to_eigen_vector(deferred.grad_proj_bias()),
                 to_eigen_vector(full.grad_proj_bias())) < tol<T>());
}
TEST_CASE_TEMPLATE_APPLY(attn_deferred, AllCases);

TEST_CASE_TEMPLATE_DEFINE("SelfAttention backward matches finite differences", C, attn_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  for (const AttnShape s : attn_shapes) {
    CAPTURE(s.batch);
    CAPTURE(s.L);
    CAPTURE(s.dim);
    CAPTURE(s.heads);
    CAPTURE(s.head_dim);
    dchag::SelfAttention<T, Space> attn("blocks.0.attn", s.dim, s.heads, s.head_dim);
    attn.init(11);
    randomise_attention(attn, 12);
    dchag::View2<T, Space> x("x", s.batch * s.L, s.dim), r("r", s.batch * s.L, s.dim);
    fill_random(x, 13);
    fill_random(r, 14);
    auto loss = [&] { return dot(attn.forward(space, x, s.batch, s.L), r); };
    loss();
    auto dx = attn.backward(space, r);
    CHECK(gradient_error(x, dx, loss) < 1e-6);
    dchag::ParameterList<T, Space> params;
    attn.parameters(params);
    REQUIRE(params.size() == 4);
    const std::size_t dim = s.dim, inner = s.heads * s.head_dim;
    CHECK(params[0].name == "blocks.0.attn.qkv.weight");
    CHECK(params[0].shape == std::vector<std::size_t>{3 * inner, dim});
    CHECK(params[1].name == "blocks.0.attn.qkv.bias");
    CHECK(params[1].shape == std::vector<std::size_t>{3 * inner});
    CHECK(params[2].name == "blocks.0.attn.proj.weight");
    CHECK(params[2].shape == std::vector<std::size_t>{dim, inner});
    CHECK(params[3].name == "blocks.0.attn.proj.bias");
    CHECK(params[3].shape == std::vector<std::size_t>{dim});
    CHECK(params[0].decay);
    CHECK_FALSE(params[1].decay);
    CHECK(params[2].decay);
    CHECK_FALSE(params[3].decay);
    for (const auto& p : params) {
      CAPTURE(p.name);
      CHECK(gradient_error(p.value, p.grad, loss) < 1e-6);
    }
    // Parameter gradients accumulate across backward calls.
    const double g0 = get_element(attn.qkv().grad_weight(), 1);
    loss();
    CHECK(attn.backward(space, r, false).data() == nullptr);
    CHECK(get_element(attn.qkv().grad_weight(), 1) == doctest::Approx(2 * g0));
  }
}
TEST_CASE_TEMPLATE_APPLY(attn_bwd, DoubleCases);

TEST_CASE("SelfAttention refuses bad shapes and settings") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::SelfAttention<double, Space> attn("attn", 12, 3, 4);
  dchag::View2<double, Space> narrow("x", 10, 11);
  CHECK_THROWS_WITH_AS(attn.forward(space, narrow, 2, 5), doctest::Contains("'x'[10, 11]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(attn.forward(space, narrow, 2, 5), doctest::Contains("dim = 12"),
                       dchag::Error);
  dchag::View2<double, Space> x("x", 10, 12);
  CHECK_THROWS_WITH_AS(attn.forward(space, x, 3, 5), doctest::Contains("batch*L = 3*5"),
                       dchag::Error);
  CHECK_THROWS_AS(attn.forward(space, x, 0, 5), dchag::Error);
  dchag::View2<double, Space> dy("dy", 10, 11);
  CHECK_THROWS_AS(attn.backward(space, x), dchag::Error);  // before any forward
  attn.forward(space, x, 2, 5);
  CHECK_THROWS_WITH_AS(attn.backward(space, dy), doctest::Contains("'dy'[10, 11]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS((dchag::SelfAttention<double, Space>("bad", 12, 0, 4)),
                       doctest::Contains("heads = 0"), dchag::Error);
  CHECK_THROWS_AS((dchag::SelfAttention<double, Space>("bad", 12, 3, -4)), dchag::Error);
}

// Tensor parallelism, simulated in one process: layers holding disjoint heads of the logical
// layer initialise to its slices, their deferred outputs sum (the AllReduce) to its output
// before the bias, and their input gradients sum to its input gradient.
TEST_CASE_TEMPLATE_DEFINE("SelfAttention split over heads adds up to the whole", C, attn_tp) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int batch = 2, L = 5, dim = 12, heads = 4, hd = 3, total_inner = heads * hd;
  dchag::SelfAttention<T, Space> whole("blocks.0.attn", dim, heads, hd);
  whole.init(5, 0.5);  // a wide init so that the attention is far from uniform
  fill_random(whole.proj_bias(), 6);
  const auto Wqkv = to_eigen(whole.qkv().weight());
  const auto Wproj = to_eigen(whole.proj().weight());

  dchag::View2<T, Space> x("x", batch * L, dim), r("r", batch * L, dim);
  fill_random(x, 7);
  fill_random(r, 8);
  const auto y_whole = to_eigen(whole.forward(space, x, batch, L));
  const auto dx_whole = to_eigen(whole.backward(space, r));
  const auto gqkv = to_eigen(whole.qkv().grad_weight());
  const auto gproj = to_eigen(whole.proj().grad_weight());

  Matrix<double> y_sum = Matrix<double>::Zero(batch * L, dim), dx_sum = y_sum;
  // Uneven shares: one head, then three.
  for (const auto& share : {std::pair<int, int>{0, 1}, std::pair<int, int>{1, 3}}) {
    const int begin = share.first, count = share.second;
    CAPTURE(begin);
    dchag::SelfAttention<T, Space> part("blocks.0.attn", dim, count, hd, true, begin, heads);
    part.init(5, 0.5);
    Kokkos::deep_copy(part.proj_bias(), whole.proj_bias());
    const int w = count * hd;
    const auto pqkv = to_eigen(part.qkv().weight());
    for (int s = 0; s < 3; ++s)
      CHECK(rel_diff(pqkv.middleRows(s * w, w),
                     Wqkv.middleRows(s * total_inner + begin * hd, w)) == 0);
    CHECK(rel_diff(to_eigen(part.proj().weight()), Wproj.middleCols(begin * hd, w)) == 0);
    y_sum += to_eigen(part.forward(space, x, batch, L));
    dx_sum += to_eigen(part.backward(space, r));
    const auto pg = to_eigen(part.qkv().grad_weight());
    for (int s = 0; s < 3; ++s)
      CHECK(rel_diff(pg.middleRows(s * w, w), gqkv.middleRows(s * total_inner + begin * hd, w)) <
            tol<T>());
    CHECK(rel_diff(to_eigen(part.proj().grad_weight()), gproj.middleCols(begin * hd, w)) <
          tol<T>());
    CHECK(rel_diff(to_eigen_vector(part.grad_proj_bias()),
                   to_eigen_vector(whole.grad_proj_bias())) < tol<T>());
  }
  y_sum.rowwise() += to_eigen_vector(whole.proj_bias()).transpose();
  CHECK(rel_diff(y_sum, y_whole) < tol<T>());
  CHECK(rel_diff(dx_sum, dx_whole) < tol<T>());
  CHECK_THROWS_WITH_AS((dchag::SelfAttention<T, Space>("attn", dim, 3, hd, true, 2, heads)),
                       doctest::Contains("do not fit in total_heads = 4"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(attn_tp, AllCases);
