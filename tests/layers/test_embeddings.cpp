#include <dchag/layers/embeddings.hpp>

#include <cmath>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {
// MAE / ClimaX get_1d_sincos_pos_embed_from_grid, written out independently of the library.
double sincos_ref(int dim, int k, double pos) {
  const int half = dim / 2;
  const int j = k < half ? k : k - half;
  const double omega = 1.0 / std::pow(10000.0, double(j) / half);
  return k < half ? std::sin(pos * omega) : std::cos(pos * omega);
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ChannelEmbedding: sin-cos rows, in-place add, gradient", C, var_embed) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int D = 8;
  dchag::ChannelEmbedding<T, Space> emb(3, D, /*channel_begin=*/4);
  emb.init();
  auto w = to_host(emb.weight());
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < D; ++k)
      CHECK(double(w(c, k)) == doctest::Approx(sincos_ref(D, k, 4 + c)).epsilon(1e-6));
  CHECK(double(w(1, 1)) == doctest::Approx(std::sin(5 * std::pow(10000.0, -0.25))));
  CHECK(double(w(0, 4)) == doctest::Approx(std::cos(4.0)));

  dchag::View3<T, Space> t("t", 3, 5, D), t0("t0", 3, 5, D);
  fill_random(t0, 1);
  Kokkos::deep_copy(t, t0);
  emb.forward(space, t);
  auto ht = to_host(t);
  auto h0 = to_host(t0);
  double worst = 0;
  for (int c = 0; c < 3; ++c)
    for (int n = 0; n < 5; ++n)
      for (int k = 0; k < D; ++k)
        worst = std::max(worst, std::abs(double(ht(c, n, k)) - double(h0(c, n, k)) - double(w(c, k))));
  CHECK(worst < tol<T>());

  dchag::ParameterList<T, Space> params;
  emb.parameters(params);
  REQUIRE(params.size() == 1);
  CHECK(params[0].name == "var_embed");
  CHECK(params[0].shape == std::vector<std::size_t>{1, 3, std::size_t(D)});
  CHECK_FALSE(params[0].decay);

  dchag::View3<T, Space> bad("bad", 2, 5, D);
  CHECK_THROWS_WITH_AS(emb.forward(space, bad), doctest::Contains("channels [4, 7)"),
                       dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(var_embed, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ChannelEmbedding backward matches finite differences", C,
                          var_embed_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::ChannelEmbedding<T, Space> emb(3, 6);
  emb.init();
  dchag::View3<T, Space> t("t", 3, 20, 6), t0("t0", 3, 20, 6), r("r", 3, 20, 6);
  fill_random(t0, 2);
  fill_random(r, 3);
  auto loss = [&] {
    Kokkos::deep_copy(t, t0);
    emb.forward(space, t);
    return dot(t, r);
  };
  emb.backward(space, r);
  CHECK(gradient_error(emb.weight(), emb.grad(), loss) < 1e-7);
}
TEST_CASE_TEMPLATE_APPLY(var_embed_bwd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("PositionEmbedding: 2-D sin-cos, in-place add, gradient", C, pos_embed) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int h = 2, w = 3, L = h * w, D = 8, B = 3;
  dchag::PositionEmbedding<T, Space> pos(L, D, h, w);
  pos.init();
  auto hp = to_host(pos.weight());
  // MAE's meshgrid(grid_w, grid_h): the first half encodes the column, the second the row.
  for (int l = 0; l < L; ++l)
    for (int k = 0; k < D; ++k) {
      const double ref = k < D / 2 ? sincos_ref(D / 2, k, l % w) : sincos_ref(D / 2, k - D / 2, l / w);
      CHECK(double(hp(l, k)) == doctest::Approx(ref).epsilon(1e-6));
    }
  CHECK(double(hp(5, 0)) == doctest::Approx(std::sin(2.0)));  // column 2
  CHECK(double(hp(5, 4)) == doctest::Approx(std::sin(1.0)));  // row 1
  CHECK(double(hp(5, 7)) == doctest::Approx(std::cos(0.01)));

  dchag::View2<T, Space> x("x", B * L, D), x0("x0", B * L, D);
  fill_random(x0, 4);
  Kokkos::deep_copy(x, x0);
  pos.forward(space, x);
  Matrix<double> expect = to_eigen(x0);
  for (int b = 0; b < B; ++b) expect.block(b * L, 0, L, D) += to_eigen(pos.weight());
  CHECK(rel_diff(to_eigen(x), expect) < tol<T>());

  dchag::ParameterList<T, Space> params;
  pos.parameters(params);
  CHECK(params[0].name == "pos_embed");
  CHECK(params[0].shape == std::vector<std::size_t>{1, std::size_t(L), std::size_t(D)});

  dchag::View2<T, Space> bad("bad", 7, D);
  CHECK_THROWS_WITH_AS(pos.forward(space, bad), doctest::Contains("L = 6"), dchag::Error);
  CHECK_THROWS_AS((dchag::PositionEmbedding<T, Space>(5, D, 2, 3)), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(pos_embed, AllCases);

TEST_CASE_TEMPLATE_DEFINE("PositionEmbedding and LeadTimeEmbedding backward match finite "
                          "differences", C, embed_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int L = 4, D = 8, B = 3;
  dchag::PositionEmbedding<T, Space> pos(L, D, 2, 2);
  pos.init();
  dchag::LeadTimeEmbedding<T, Space> lead(D);
  lead.init(5);
  fill_random(lead.linear().bias(), 6);
  dchag::View2<T, Space> x("x", B * L, D), x0("x0", B * L, D), r("r", B * L, D);
  dchag::View1<T, Space> lt("lead_times", B);
  fill_random(x0, 7);
  fill_random(r, 8);
  fill_random(lt, 9, 0.0, 3.0);
  auto loss = [&] {
    Kokkos::deep_copy(x, x0);
    pos.forward(space, x);
    lead.forward(space, x, lt);
    return dot(x, r);
  };
  loss();
  lead.backward(space, r);
  pos.backward(space, r);
  CHECK(gradient_error(pos.weight(), pos.grad(), loss) < 1e-7);
  CHECK(gradient_error(lead.linear().weight(), lead.linear().grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(lead.linear().bias(), lead.linear().grad_bias(), loss) < 1e-7);
}
TEST_CASE_TEMPLATE_APPLY(embed_bwd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("LeadTimeEmbedding adds W * lead_time + b to every token of a sample",
                          C, lead_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int L = 5, D = 6, B = 2;
  dchag::LeadTimeEmbedding<T, Space> lead(D);
  lead.init(3);
  fill_random(lead.linear().bias(), 4);
  dchag::View2<T, Space> x("x", B * L, D), x0("x0", B * L, D);
  dchag::View1<T, Space> lt("lead_times", B);
  fill_random(x0, 5);
  fill_random(lt, 6, 1.0, 72.0);
  Kokkos::deep_copy(x, x0);
  lead.forward(space, x, lt);
  const Matrix<double> W = to_eigen(lead.linear().weight());
  const Eigen::VectorXd bias = to_eigen_vector(lead.linear().bias());
  const Eigen::VectorXd t = to_eigen_vector(lt);
  Matrix<double> expect = to_eigen(x0);
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) expect.row(b * L + l) += (W.col(0) * t(b) + bias).transpose();
  CHECK(rel_diff(to_eigen(x), expect) < tol<T>());
  dchag::ParameterList<T, Space> params;
  lead.parameters(params);
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "lead_time_embed.weight");
  CHECK(params[0].shape == std::vector<std::size_t>{std::size_t(D), 1});
  CHECK(params[1].name == "lead_time_embed.bias");
  dchag::View2<T, Space> bad("bad", 7, D);
  CHECK_THROWS_WITH_AS(lead.forward(space, bad, lt), doctest::Contains("B = 2"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(lead_fwd, AllCases);
