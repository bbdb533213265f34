#include <dchag/train/grad_clip.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Parameters whose gradients are given values: the norm is then known in closed form.
template <class T, class Space>
struct KnownGrads {
  std::vector<std::string> names;
  std::vector<dchag::View1<T, Space>> values, grads;

  void add(const std::string& name, const std::vector<double>& g) {
    names.push_back(name);
    values.emplace_back(name, g.size());
    grads.emplace_back(name + ".grad", g.size());
    auto h = Kokkos::create_mirror_view(grads.back());
    for (std::size_t i = 0; i < g.size(); ++i) h(i) = T(g[i]);
    Kokkos::deep_copy(grads.back(), h);
  }
  dchag::ParameterList<T, Space> parameters() const {
    dchag::ParameterList<T, Space> list;
    for (std::size_t i = 0; i < names.size(); ++i)
      dchag::Impl::add_parameter<T, Space>(list, names[i], values[i], grads[i], false);
    return list;
  }
  std::vector<double> grad(std::size_t i) const {
    auto h = to_host(grads[i]);
    std::vector<double> out;
    for (std::size_t k = 0; k < h.extent(0); ++k) out.push_back(double(h(k)));
    return out;
  }
};

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("clip_grad_norm clips to max_norm like torch", C, clip) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  // Norms 5 and 12: global norm 13.
  KnownGrads<T, Space> g;
  g.add("blocks.0.attn.qkv.weight", {3, 4});
  g.add("blocks.0.attn.qkv.bias", {0, 0, -12});
  g.add("empty_fsdp_slice", {});
  const auto params = g.parameters();

  // Below the threshold: reported, untouched.
  CHECK(dchag::clip_grad_norm(space, params, 20.0) == doctest::Approx(13.0).epsilon(tol<T>()));
  CHECK(g.grad(0) == std::vector<double>{3, 4});
  CHECK(dchag::grad_sum_squares(space, params) == doctest::Approx(169.0).epsilon(tol<T>()));

  // Above: scaled by max_norm / (norm + 1e-6), the pre-clip norm is returned.
  CHECK(dchag::clip_grad_norm(space, params, 6.5) == doctest::Approx(13.0).epsilon(tol<T>()));
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK(g.grad(0)[0] == doctest::Approx(3 * coef).epsilon(tol<T>()));
  CHECK(g.grad(0)[1] == doctest::Approx(4 * coef).epsilon(tol<T>()));
  CHECK(g.grad(1)[2] == doctest::Approx(-12 * coef).epsilon(tol<T>()));
  // Just under max_norm, by the 1e-6 of torch's rule.
  CHECK(std::sqrt(dchag::grad_sum_squares(space, params)) ==
        doctest::Approx(13.0 * coef).epsilon(tol<T>()));
  CHECK(13.0 * coef < 6.5);

  // apply_grad_clip with a norm reduced elsewhere (e.g. over ranks).
  const double norm = 13.0 * coef;
  const double applied = dchag::apply_grad_clip(space, params, 1.0, norm);
  CHECK(applied == doctest::Approx(1.0 / (norm + 1e-6)));
  CHECK(std::sqrt(dchag::grad_sum_squares(space, params)) ==
        doctest::Approx(norm * applied).epsilon(tol<T>()));
  CHECK(dchag::apply_grad_clip(space, params, 10.0, 1.0) == 1.0);

  // All-zero gradients: norm 0, nothing to scale.
  KnownGrads<T, Space> z;
  z.add("w", {0, 0, 0});
  CHECK(dchag::clip_grad_norm(space, z.parameters(), 1.0) == 0.0);
  CHECK(dchag::clip_grad_norm(space, dchag::ParameterList<T, Space>(), 1.0) == 0.0);
}
TEST_CASE_TEMPLATE_APPLY(clip, AllCases);

TEST_CASE_TEMPLATE_DEFINE("clip_grad_norm names the parameters with NaN or Inf gradients", C,
                          clip_nan) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  KnownGrads<T, Space> g;
  g.add("pos_embed", {1, 2});
  g.add("blocks.3.mlp.fc2.weight", {0, std::numeric_limits<double>::quiet_NaN(), 1});
  g.add("head.2.bias", {std::numeric_limits<double>::infinity()});
  const auto params = g.parameters();
  try {
    dchag::clip_grad_norm(space, params, 1.0);
    FAIL("expected dchag::Error");
  } catch (const dchag::Error& e) {
    const std::string what = e.what();
    CHECK(what.find("'blocks.3.mlp.fc2.weight'") != std::string::npos);
    CHECK(what.find("'head.2.bias'") != std::string::npos);
    CHECK(what.find("pos_embed") == std::string::npos);
  }
  // The gradients were not touched by the refused call.
  CHECK(g.grad(0) == std::vector<double>{1, 2});

  CHECK_THROWS_WITH_AS(dchag::apply_grad_clip(space, params, 1.0, std::nan("")),
                       doctest::Contains("the global gradient norm"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::clip_grad_norm(space, params, 0.0),
                       doctest::Contains("max_norm"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::clip_grad_norm(space, params, -1.0),
                       doctest::Contains("max_norm"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(clip_nan, AllCases);
