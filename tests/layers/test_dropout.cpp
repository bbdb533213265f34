// Dropout and drop-path (kernels/dropout.hpp) and the MLP's drop1 that uses them.
#include <dchag/kernels/dropout.hpp>
#include <dchag/layers/mlp.hpp>
#include <dchag/model/dropout_context.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

template <class View>
std::vector<double> host_values(const View& v) {
  auto h = to_host(v);
  std::vector<double> out;
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j) out.push_back(double(h(i, j)));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("dropout drops a fraction p and scales the rest by 1/(1-p)", C,
                          dropout_stats) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 8, L = 25, n = 96;
  for (const double p : {0.1, 0.5}) {
    CAPTURE(p);
    const auto site = dchag::dropout_site(3, 17, "blocks.0.mlp.drop2", p);
    dchag::View2<T, Space> x("x", B * L, n), y("y", B * L, n);
    Kokkos::deep_copy(x, T(1));
    dchag::dropout(space, site, x, y, L);
    const auto v = host_values(y);
    const T kept = static_cast<T>(1.0 / (1.0 - p));
    std::size_t zeros = 0;
    for (double e : v) {
      if (e == 0) {
        ++zeros;
      } else {
        CHECK(e == double(kept));
      }
    }
    const double N = double(v.size()), frac = double(zeros) / N;
    CHECK(std::abs(frac - p) < 5 * std::sqrt(p * (1 - p) / N));
    // The same key gives the same mask; in place as out of place.
    dchag::dropout(space, site, x, x, L);
    CHECK(host_values(x) == v);
    // Another step or another site: another mask.
    Kokkos::deep_copy(x, T(1));
    dchag::dropout(space, dchag::dropout_site(3, 18, "blocks.0.mlp.drop2", p), x, x, L);
    CHECK(host_values(x) != v);
    Kokkos::deep_copy(x, T(1));
    dchag::dropout(space, dchag::dropout_site(3, 17, "blocks.0.mlp.drop1", p), x, x, L);
    CHECK(host_values(x) != v);
  }
  // Rate 0 is the identity; a probability outside [0, 1) is refused, naming it.
  dchag::View2<T, Space> x("x", 4, 3), y("y", 4, 3);
  fill_random(x, 1);
  dchag::dropout(space, dchag::DropoutSite{}, x, y, 2);
  CHECK(host_values(y) == host_values(x));
  CHECK_THROWS_WITH_AS(dchag::dropout_site(0, 0, "pos_drop", 1.0),
                       doctest::Contains("must be in [0, 1), got 1"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::dropout_site(0, 0, "pos_drop", -0.5),
                       doctest::Contains("got -0.5"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::dropout(space, dchag::dropout_site(0, 0, "s", 0.5), x, y, 3),
                       doctest::Contains("not whole samples of L = 3"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(dropout_stats, AllCases);

TEST_CASE_TEMPLATE_DEFINE("dropout masks depend on the global sample and logical feature only", C,
                          dropout_slices) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 4, L = 3, n = 10;
  const auto site = dchag::dropout_site(5, 2, "blocks.1.mlp.drop1", 0.4);
  dchag::View2<T, Space> full("full", B * L, n);
  fill_random(full, 9);
  auto whole = to_host(full);
  dchag::View2<T, Space> dropped("dropped", B * L, n);
  dchag::dropout(space, site, full, dropped, L);
  auto ref = to_host(dropped);
  // Samples [2, 4) and features [4, 10): what a data-parallel rank holding a column slice sees.
  const int b0 = 2, f0 = 4;
  dchag::View2<T, Space> part("part", (B - b0) * L, n - f0);
  Kokkos::deep_copy(part, Kokkos::subview(full, std::make_pair(b0 * L, B * L),
                                          std::make_pair(f0, n)));
  dchag::dropout(space, site, part, part, L, b0, f0);
  auto hp = to_host(part);
  for (int r = 0; r < (B - b0) * L; ++r)
    for (int j = 0; j < n - f0; ++j) CHECK(hp(r, j) == ref(b0 * L + r, f0 + j));

  // drop_path: one decision per sample, the same for all its tokens and features.
  const auto path = dchag::dropout_site(5, 2, "blocks.1.drop_path2", 0.5);
  dchag::View2<T, Space> dp("dp", B * L, n);
  dchag::drop_path(space, path, full, dp, L);
  auto hd = to_host(dp);
  for (int b = 0; b < B; ++b) {
    const bool kept = hd(b * L, 0) != T(0);
    for (int l = 0; l < L; ++l)
      for (int j = 0; j < n; ++j)
        CHECK(double(hd(b * L + l, j)) ==
              doctest::Approx(kept ? 2.0 * double(whole(b * L + l, j)) : 0.0).epsilon(tol<T>()));
  }
  dchag::View2<T, Space> tail("tail", (B - b0) * L, n);
  Kokkos::deep_copy(tail, Kokkos::subview(full, std::make_pair(b0 * L, B * L), Kokkos::ALL));
  dchag::drop_path(space, path, tail, tail, L, b0);
  auto ht = to_host(tail);
  for (int r = 0; r < (B - b0) * L; ++r)
    for (int j = 0; j < n; ++j) CHECK(ht(r, j) == hd(b0 * L + r, j));
}
TEST_CASE_TEMPLATE_APPLY(dropout_slices, AllCases);

TEST_CASE("drop_path drops a fraction p of the samples") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const int B = 4000, L = 2, n = 3;
  const double p = 0.3;
  dchag::View2<double, Space> x("x", B * L, n);
  Kokkos::deep_copy(x, 1.0);
  dchag::drop_path(space, dchag::dropout_site(1, 1, "blocks.0.drop_path1", p), x, x, L);
  auto h = to_host(x);
  int dropped = 0;
  for (int b = 0; b < B; ++b) dropped += h(b * L, 0) == 0.0;
  CHECK(std::abs(double(dropped) / B - p) < 5 * std::sqrt(p * (1 - p) / B));
}

TEST_CASE("the dropout hash is SplitMix64's, like the parameter initialisers'") {
  for (std::uint64_t z : {0ULL, 1ULL, 0x123456789abcdefULL, ~0ULL})
    CHECK(dchag::Impl::dropout_mix(z) == dchag::Impl::mix64(z));
}

TEST_CASE_TEMPLATE_DEFINE("dropout's backward is the same mask: gradients match", C,
                          dropout_grad) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 3, L = 4, n = 7;
  const auto drop = dchag::dropout_site(2, 9, "pos_drop", 0.35);
  const auto path = dchag::dropout_site(2, 9, "blocks.0.drop_path1", 0.5);
  dchag::View2<T, Space> x("x", B * L, n), y("y", B * L, n), r("r", B * L, n),
      g("g", B * L, n);
  fill_random(x, 3);
  fill_random(r, 4);
  auto f = [&] {
    dchag::dropout(space, drop, x, y, L, 1, 2);
    dchag::drop_path(space, path, y, y, L, 1);
    return dot(y, r);
  };
  // dL/dx = drop_path(dropout(r)) with the same sites.
  dchag::dropout(space, drop, r, g, L, 1, 2);
  dchag::drop_path(space, path, g, g, L, 1);
  CHECK(gradient_error(x, g, f, 40) < 1e-8);
}
TEST_CASE_TEMPLATE_APPLY(dropout_grad, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("Mlp drop1 acts after GELU, keyed by the logical hidden unit", C,
                          mlp_drop1) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int dim = 6, hidden = 12, B = 2, L = 5;
  const auto site = dchag::dropout_site(4, 1, "blocks.0.mlp.drop1", 0.4);
  dchag::Mlp<T, Space> mlp("blocks.0.mlp", dim, hidden);
  mlp.init(3);
  dchag::ParameterList<T, Space> params;
  mlp.parameters(params);
  for (std::size_t i = 0; i < params.size(); ++i) fill_random(params[i].value, 10 + i, -0.5, 0.5);
  dchag::View2<T, Space> x("x", B * L, dim), r("r", B * L, dim);
  fill_random(x, 1);
  fill_random(r, 2);
  // Gradient check with the mask held fixed (the same site in every forward).
  auto loss = [&] { return dot(mlp.forward(space, x, site, L, 0), r); };
  loss();
  for (auto& p : params) Kokkos::deep_copy(p.grad, T(0));
  auto dx = mlp.backward(space, r);
  CHECK(gradient_error(x, dx, loss) < 1e-7);
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(gradient_error(p.value, p.grad, loss) < 1e-7);
  }
  // Two halves of the hidden layer (tensor parallelism) give the whole layer's output.
  dchag::Mlp<T, Space> lo("blocks.0.mlp", dim, hidden / 2, false, 0, hidden),
      hi("blocks.0.mlp", dim, hidden / 2, true, hidden / 2, hidden);
  lo.init(3);
  hi.init(3);
  dchag::Mlp<T, Space> whole("blocks.0.mlp", dim, hidden);
  whole.init(3);
  auto yw = to_host(whole.forward(space, x, site, L, 0));
  auto ylo = to_host(lo.forward(space, x, site, L, 0));
  auto yhi = to_host(hi.forward(space, x, site, L, 0));
  for (int i = 0; i < B * L; ++i)
    for (int j = 0; j < dim; ++j)
      CHECK(double(ylo(i, j) + yhi(i, j)) == doctest::Approx(double(yw(i, j))).epsilon(tol<T>()));
}
TEST_CASE_TEMPLATE_APPLY(mlp_drop1, DoubleCases);
