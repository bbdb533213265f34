#include <dchag/layers/patch_embed.hpp>

#include <cstring>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// T[c, b*L + l, d] = bias[c, d] + sum_{i,j} W[c, d, i*p + j] x[b, c, py*p + i, px*p + j], with
// explicit loops (no im2col), in double.
template <class XV, class Embed>
std::vector<Matrix<double>> conv_reference(const XV& x, const Embed& embed) {
  auto hx = to_host(x);
  auto hw = to_host(embed.weight());
  auto hb = to_host(embed.bias());
  const int B = hx.extent(0), C = hx.extent(1), H = hx.extent(2), W = hx.extent(3);
  const int p = embed.patch(), D = embed.dim(), wp = W / p, L = (H / p) * wp;
  std::vector<Matrix<double>> out(C, Matrix<double>::Zero(B * L, D));
  for (int c = 0; c < C; ++c)
    for (int b = 0; b < B; ++b)
      for (int py = 0; py < H / p; ++py)
        for (int px = 0; px < wp; ++px)
          for (int d = 0; d < D; ++d) {
            double s = hb(c, d);
            for (int i = 0; i < p; ++i)
              for (int j = 0; j < p; ++j)
                s += double(hw(c, d, i * p + j)) * double(hx(b, c, py * p + i, px * p + j));
            out[c](b * L + py * wp + px, d) = s;
          }
  return out;
}

template <class V>
Matrix<double> channel(const V& t, int c) {
  auto h = to_host(t);
  Matrix<double> m(h.extent(1), h.extent(2));
  for (std::size_t n = 0; n < h.extent(1); ++n)
    for (std::size_t d = 0; d < h.extent(2); ++d) m(n, d) = h(c, n, d);
  return m;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ChannelPatchEmbed forward matches a per-channel convolution", C,
                          patch_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::ChannelPatchEmbed<T, Space> embed(3, 4, 5);
  embed.init(21);
  fill_random(embed.bias(), 22);
  dchag::View4<T, Space> x("x", 2, 3, 8, 12);
  fill_random(x, 23);
  auto t = embed.forward(space, x);
  REQUIRE(t.extent(0) == 3);
  REQUIRE(t.extent(1) == 2 * 6);
  REQUIRE(t.extent(2) == 5);
  const auto ref = conv_reference(x, embed);
  for (int c = 0; c < 3; ++c) CHECK(rel_diff(channel(t, c), ref[c]) < tol<T>());
  // Reused buffers: a second call with new data gives the new answer.
  fill_random(x, 24);
  t = embed.forward(space, x);
  const auto ref2 = conv_reference(x, embed);
  for (int c = 0; c < 3; ++c) CHECK(rel_diff(channel(t, c), ref2[c]) < tol<T>());
  CHECK(embed.flops(12) == doctest::Approx(2.0 * 3 * 12 * 5 * 16));
}
TEST_CASE_TEMPLATE_APPLY(patch_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ChannelPatchEmbed holding channels 2..4 equals them in the full one",
                          C, patch_slice) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, H = 6, W = 9, p = 3, D = 7;
  dchag::ChannelPatchEmbed<T, Space> full(5, p, D), part(3, p, D, /*channel_begin=*/2);
  full.init(99);
  part.init(99);
  dchag::View4<T, Space> x("x", B, 5, H, W), xs("xs", B, 3, H, W);
  fill_random(x, 5);
  Kokkos::deep_copy(xs, Kokkos::subview(x, Kokkos::ALL, std::make_pair(2, 5), Kokkos::ALL,
                                        Kokkos::ALL));
  auto wf = to_host(full.weight());
  auto wp = to_host(part.weight());
  const std::size_t per = std::size_t(D) * p * p;
  CHECK(std::memcmp(wf.data() + 2 * per, wp.data(), 3 * per * sizeof(T)) == 0);
  auto tf = to_host(full.forward(space, x));
  auto tp = to_host(part.forward(space, xs));
  const std::size_t block = tp.extent(1) * tp.extent(2);
  CHECK(std::memcmp(tf.data() + 2 * block, tp.data(), 3 * block * sizeof(T)) == 0);

  dchag::ParameterList<T, Space> params;
  part.parameters(params);
  REQUIRE(params.size() == 6);
  CHECK(params[0].name == "token_embeds.2.proj.weight");
  CHECK(params[0].shape == std::vector<std::size_t>{std::size_t(D), 1, std::size_t(p), std::size_t(p)});
  CHECK(params[0].decay);
  CHECK(params[5].name == "token_embeds.4.proj.bias");
  CHECK(params[5].shape == std::vector<std::size_t>{std::size_t(D)});
  CHECK_FALSE(params[5].decay);
}
TEST_CASE_TEMPLATE_APPLY(patch_slice, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ChannelPatchEmbed biases start as PyTorch's Conv2d default", C,
                          patch_bias_init) {
  using Space = typename C::space;
  using T = typename C::scalar;
  // uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = p * p: bound 1/p, per global channel.
  const int p = 4, D = 256;
  dchag::ChannelPatchEmbed<T, Space> full(6, p, D), part(2, p, D, /*channel_begin=*/3);
  full.init(5);
  part.init(5);
  auto bf = to_host(full.bias());
  auto bp = to_host(part.bias());
  double lo = 1, hi = -1, mean = 0, sq = 0;
  for (std::size_t c = 0; c < bf.extent(0); ++c)
    for (std::size_t d = 0; d < bf.extent(1); ++d) {
      const double b = double(bf(c, d));
      lo = std::min(lo, b);
      hi = std::max(hi, b);
      mean += b;
      sq += b * b;
    }
  const double n = double(bf.size()), bound = 1.0 / p;
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(lo < -0.95 * bound);
  CHECK(hi > 0.95 * bound);
  CHECK(std::abs(mean / n) < 5 * bound / std::sqrt(3 * n));
  CHECK(std::sqrt(sq / n) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.05));
  // Channels 3 and 4 of the part hold the values of channels 3 and 4 of the whole.
  for (std::size_t c = 0; c < 2; ++c)
    for (std::size_t d = 0; d < std::size_t(D); ++d) CHECK(bp(c, d) == bf(c + 3, d));
  // Each channel its own stream.
  CHECK(bf(0, 0) != bf(1, 0));
}
TEST_CASE_TEMPLATE_APPLY(patch_bias_init, AllCases);

TEST_CASE_TEMPLATE_DEFINE("ChannelPatchEmbed backward matches finite differences", C, patch_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::ChannelPatchEmbed<T, Space> embed("tok", 2, 2, 3, 1);
  embed.init(7);
  fill_random(embed.bias(), 8);
  dchag::View4<T, Space> x("x", 2, 2, 4, 6);
  dchag::View3<T, Space> r("r", 2, 12, 3);
  fill_random(x, 9);
  fill_random(r, 10);
  auto loss = [&] { return dot(embed.forward(space, x), r); };
  loss();
  embed.backward(space, r);
  CHECK(gradient_error(embed.weight(), embed.grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(embed.bias(), embed.grad_bias(), loss) < 1e-7);
  const double g0 = get_element(embed.grad_bias(), 4);
  embed.backward(space, r);
  CHECK(get_element(embed.grad_bias(), 4) == doctest::Approx(2 * g0));
  dchag::ParameterList<T, Space> params;
  embed.parameters(params);
  CHECK(params[0].name == "tok.1.proj.weight");
}
TEST_CASE_TEMPLATE_APPLY(patch_bwd, DoubleCases);

TEST_CASE("ChannelPatchEmbed refuses mismatched images") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::ChannelPatchEmbed<double, Space> embed(3, 4, 8, 5);
  dchag::View4<double, Space> odd("x", 1, 3, 8, 10), few("y", 1, 2, 8, 8);
  CHECK_THROWS_WITH_AS(embed.forward(space, odd), doctest::Contains("W = 10"), dchag::Error);
  CHECK_THROWS_WITH_AS(embed.forward(space, odd), doctest::Contains("patch size 4"), dchag::Error);
  CHECK_THROWS_WITH_AS(embed.forward(space, few), doctest::Contains("has 2 channels"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(embed.forward(space, few), doctest::Contains("holds 3"), dchag::Error);
  CHECK_THROWS_AS((dchag::ChannelPatchEmbed<double, Space>(0, 4, 8)), dchag::Error);
}
