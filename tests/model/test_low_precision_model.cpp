// The whole forecast model on 16-bit storage: ChannelViT<bf16> (and fp16) given the weights of a
// ChannelViT<float>, rounded, and the same rounded input computes the float model's prediction,
// loss and gradients to the formats' precision, under both D-CHAG aggregators (the cross-attention
// one is also the baseline's).
#include <dchag/model/channel_vit.hpp>
#include <dchag/train/losses.hpp>

#include <cmath>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

dchag::ModelConfig model_config(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 32;
  c.depth = 2;
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 9;
  return c;
}

template <class V>
std::vector<double> host_values(const V& v) {
  const auto h = to_host(v);
  std::vector<double> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = double(h.data()[i]);
  return out;
}

// dst <- src's values as float (the same rounded numbers).
template <class Src, class Dst>
void widen_into(const Src& src, const Dst& dst) {
  const auto hs = to_host(src);
  auto hd = Kokkos::create_mirror_view(dst);
  for (std::size_t k = 0; k < hs.size(); ++k) hd.data()[k] = float(hs.data()[k]);
  Kokkos::deep_copy(dst, hd);
}

// max |a - b| / max |b|.
double relative(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

template <class T, class Policy>
void compare(const dchag::ModelConfig& cfg, double tolerance) {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::ChannelViT<float, Space, Policy> wide(cfg);
  dchag::ChannelViT<T, Space, Policy> narrow(cfg);
  // The float model's weights, rounded, in both: the comparison is then of the arithmetic only.
  const auto pw = wide.parameters();
  const auto pn = narrow.parameters();
  REQUIRE(pw.size() == pn.size());
  for (std::size_t i = 0; i < pw.size(); ++i) {
    REQUIRE(pw[i].name == pn[i].name);
    auto hw = Kokkos::create_mirror_view(pw[i].value);
    auto hn = Kokkos::create_mirror_view(pn[i].value);
    Kokkos::deep_copy(hw, pw[i].value);
    for (std::size_t k = 0; k < hw.size(); ++k) {
      hn(k) = T(hw(k));
      hw(k) = float(hn(k));
    }
    Kokkos::deep_copy(pw[i].value, hw);
    Kokkos::deep_copy(pn[i].value, hn);
  }
  const int B = 2;
  dchag::View4<T, Space> xn("xn", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<T, Space> yn("yn", B, cfg.channels, cfg.height, cfg.width);
  dchag::View1<T, Space> lead_n("lead_n", B), lat_n("lat_n", cfg.height);
  fill_random(xn, 1);
  fill_random(yn, 2);
  Kokkos::deep_copy(lead_n, T(0.5));
  Kokkos::deep_copy(lat_n, T(1));
  dchag::View4<float, Space> xw("xw", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<float, Space> yw("yw", B, cfg.channels, cfg.height, cfg.width);
  dchag::View1<float, Space> lead_w("lead_w", B), lat_w("lat_w", cfg.height);
  widen_into(xn, xw);
  widen_into(yn, yw);
  Kokkos::deep_copy(lead_w, 0.5f);
  Kokkos::deep_copy(lat_w, 1.0f);

  const auto pred_w = wide.forward(space, xw, lead_w);
  const auto pred_n = narrow.forward(space, xn, lead_n);
  CHECK(relative(host_values(pred_n), host_values(pred_w)) < tolerance);

  dchag::View4<float, Space> dw("dw", pred_w.extent(0), pred_w.extent(1), pred_w.extent(2),
                                pred_w.extent(3));
  dchag::View4<T, Space> dn("dn", pred_n.extent(0), pred_n.extent(1), pred_n.extent(2),
                            pred_n.extent(3));
  const double loss_w = dchag::lat_weighted_mse(space, pred_w, yw, lat_w, dw);
  const double loss_n = dchag::lat_weighted_mse(space, pred_n, yn, lat_n, dn);
  CHECK(loss_n == doctest::Approx(loss_w).epsilon(tolerance));
  wide.backward(space, dw);
  narrow.backward(space, dn);
  // Every parameter's gradient, relative to its own largest entry.
  for (std::size_t i = 0; i < pw.size(); ++i) {
    CAPTURE(pw[i].name);
    CHECK(relative(host_values(pn[i].grad), host_values(pw[i].grad)) < 4 * tolerance);
  }
}

}  // namespace

TEST_CASE("ChannelViT<bf16> and <fp16> compute the float model's prediction and gradients") {
  using DL = dchag::DistributedChannels<dchag::LinearAggregator>;
  using DC = dchag::DistributedChannels<dchag::CrossAttentionAggregator>;
  // Relative to the largest value: a handful of 16-bit roundings per layer, through two blocks.
  compare<dchag::bf16, DL>(model_config({4, 1}), 3e-2);
  compare<dchag::bf16, DC>(model_config({4, 1}), 3e-2);
  compare<dchag::fp16, DL>(model_config({4, 1}), 4e-3);
}
