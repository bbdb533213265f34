#include <dchag/core/error.hpp>
#include <dchag/kernels/patchify.hpp>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
// patchify and unpatchify on one shape against the index map written out as plain loops:
// token b*L + hp*(W/p) + wp, feature (i*p + j)*C + c for pixel (hp*p + i, wp*p + j) of c.
template <class T, class Space>
void check_patchify(int B, int C, int H, int W, int p, std::uint64_t seed) {
  Space space;
  const int wp = W / p, L = (H / p) * wp;
  dchag::View4<T, Space> x("x", B, C, H, W), back("back", B, C, H, W);
  dchag::View2<T, Space> y("y", B * L, p * p * C);
  fill_random(x, seed);
  fill_random(y, seed + 1);  // every element must be overwritten
  fill_random(back, seed + 2);
  dchag::patchify(space, x, p, y);
  dchag::unpatchify(space, y, p, back);
  auto hx = to_host(x);
  auto hy = to_host(y);
  auto hb = to_host(back);
  int wrong_tokens = 0, wrong_image = 0;
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) {
          const int n = b * L + (h / p) * wp + w / p, k = ((h % p) * p + w % p) * C + c;
          wrong_tokens += hy(n, k) != hx(b, c, h, w);
          wrong_image += hb(b, c, h, w) != hx(b, c, h, w);
        }
  CAPTURE(B);
  CAPTURE(C);
  CAPTURE(H);
  CAPTURE(W);
  CAPTURE(p);
  CHECK(wrong_tokens == 0);
  CHECK(wrong_image == 0);
}
}  // namespace

// Channel counts around the host kernel's 16-channel blocks, rows of fewer, exactly and more
// than the 64 columns of its tile (the last tile partial), and a patch wider than a tile.
TEST_CASE_TEMPLATE_DEFINE("patchify and unpatchify follow the ClimaX / MAE index map", C,
                          patchify_map) {
  using Space = typename C::space;
  using T = typename C::scalar;
  std::uint64_t seed = 40;
  check_patchify<T, Space>(1, 1, 1, 1, 1, seed++);
  check_patchify<T, Space>(2, 3, 4, 8, 2, seed++);
  check_patchify<T, Space>(2, 16, 8, 64, 4, seed++);
  check_patchify<T, Space>(1, 17, 6, 150, 3, seed++);
  check_patchify<T, Space>(3, 33, 10, 20, 5, seed++);
  check_patchify<T, Space>(1, 2, 70, 140, 70, seed++);
}
TEST_CASE_TEMPLATE_APPLY(patchify_map, AllCases);

TEST_CASE("patchify refuses images that do not split into patches, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View4<float, Space> x("x", 2, 3, 8, 6);
  dchag::View2<float, Space> y("y", 2 * 4 * 3, 12), wrong("wrong", 5, 12);
  CHECK_THROWS_WITH_AS(dchag::patchify(space, x, 4, y), doctest::Contains("patches of 4"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::patchify(space, x, 2, wrong), doctest::Contains("'wrong'[5, 12]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::unpatchify(space, wrong, 2, x), doctest::Contains("[24, 12]"),
                       dchag::Error);
}
