// The channel masked autoencoder (ChannelMAE) on one rank: masks (exactly Lk kept, different per
// sample, reproducible from (seed, step, sample)), the token moves behind them, the loss on
// masked patches only, the whole model's backward against finite differences with the mask
// held fixed, refusals, and a few training steps through MaeTrainer.
#include <dchag/core/memory_tracker.hpp>
#include <dchag/io/hyperspectral.hpp>
#include <dchag/kernels/masking.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/mae_trainer.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>
#include <set>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Central-difference step. A whole model's loss is O(1) while some entries' gradients are
// O(1e-3): at the usual 1e-6 the rounding of the loss (1e-16 / h) is already 1e-6 of such a
// gradient, and at 1e-5 the truncation error (h^2) is still below 1e-8.
constexpr double kStep = 1e-5;

// C=4, 8x8 image, patch 4 (L=4), D=8, depth 1, heads 2, groups {2, 1}; a decoder of width 8.
dchag::ModelConfig tiny_model(std::vector<int> levels = {2, 1}) {
  dchag::ModelConfig c;
  c.channels = 4;
  c.height = c.width = 8;
  c.patch = 4;
  c.dim = 8;
  c.depth = 1;
  c.heads = 2;
  c.levels = std::move(levels);
  c.seed = 9;
  return c;
}

dchag::MaeConfig tiny_mae(double mask_ratio = 0.5) {
  dchag::MaeConfig m;
  m.mask_ratio = mask_ratio;
  m.decoder_dim = 8;
  m.decoder_depth = 1;
  m.decoder_heads = 2;
  m.decoder_mlp_ratio = 2;
  return m;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

template <class List>
void randomise(const List& params, std::uint64_t seed) {
  for (const auto& p : params) {
    if (p.name.find("norm") != std::string::npos && ends_with(p.name, ".weight"))
      fill_random(p.value, seed++, 0.5, 1.5);
    else if (p.decay)
      fill_random(p.value, seed++, -0.5, 0.5);
    else
      fill_random(p.value, seed++, -0.3, 0.3);
  }
}

template <class View>
std::vector<double> host_values(const View& v) {
  auto h = to_host(v);
  std::vector<double> out(h.span());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(h.data()[i]);
  return out;
}

template <class View>
std::vector<std::vector<int>> rows_of(const View& v) {
  auto h = to_host(v);
  std::vector<std::vector<int>> out(h.extent(0));
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j) out[i].push_back(static_cast<int>(h(i, j)));
  return out;
}

template <class Policy, class T, class Space>
void check_mae_gradients(const dchag::ModelConfig& cfg, const dchag::MaeConfig& mc, int B) {
  CAPTURE(cfg.describe());
  CAPTURE(mc.describe());
  CAPTURE(Policy::name());
  Space space;
  dchag::ChannelMAE<T, Space, Policy> model(cfg, mc);
  const auto params = model.parameters();
  randomise(params, 200);
  const int L = model.patches(), P = model.patch_values();
  dchag::View4<T, Space> x("x", B, cfg.channels, cfg.height, cfg.width);
  dchag::View3<T, Space> target("target", B, L, P), dpred("dpred", B, L, P);
  fill_random(x, 1);
  fill_random(target, 2, -2.0, 2.0);
  // The mask is a function of the step: holding it fixed holds the mask fixed in every
  // evaluation of the loss.
  const std::uint64_t step = 17;
  auto loss = [&] {
    return dchag::masked_mse(space, model.forward(space, x, step), target, model.mask(), dpred);
  };
  dchag::zero_grad(space, params);
  loss();
  const auto mask = host_values(model.mask());
  model.backward(space, dpred);
  std::set<std::string> names;
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(names.insert(p.name).second);
    CHECK(dchag::sum_squares(space, p.grad) > 0);
    CHECK(gradient_error(p.value, p.grad, loss, 16, kStep) < 1e-6);
  }
  CHECK(host_values(model.mask()) == mask);
}

// Runs `make` and checks that it throws a dchag::Error whose message contains every one of
// `parts`, without a single byte of Kokkos memory allocated on the way.
template <class Make>
void check_refused(Make&& make, const std::vector<std::string>& parts) {
  dchag::MemoryTracker::install();
  const std::uint64_t before = dchag::MemoryTracker::current_total_bytes();
  dchag::MemoryTracker::reset_peak();
  std::string message;
  try {
    make();
  } catch (const dchag::Error& e) {
    message = e.what();
  }
  CAPTURE(message);
  REQUIRE(!message.empty());
  for (const auto& p : parts) {
    CAPTURE(p);
    CHECK(message.find(p) != std::string::npos);
  }
  CHECK(dchag::MemoryTracker::peak_total_bytes() == before);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ChannelMAE: every gradient matches finite differences", C, mae_grad) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using namespace dchag;
  SUBCASE("D-CHAG-L, half the patches kept") {
    check_mae_gradients<DistributedChannels<LinearAggregator>, T, Space>(tiny_model(), tiny_mae(),
                                                                         2);
  }
  SUBCASE("MAE's default ratio (one patch of four kept), D-CHAG-C") {
    check_mae_gradients<DistributedChannels<CrossAttentionAggregator>, T, Space>(
        tiny_model(), tiny_mae(0.75), 3);
  }
  SUBCASE("ClimaX aggregation, a wider image and a deeper decoder") {
    auto cfg = tiny_model({1});
    cfg.width = 16;  // L = 8
    auto mc = tiny_mae(0.75);
    mc.decoder_depth = 2;
    mc.decoder_dim = 12;
    mc.decoder_heads = 3;
    check_mae_gradients<TensorParallel, T, Space>(cfg, mc, 2);
  }
}
TEST_CASE_TEMPLATE_APPLY(mae_grad, DoubleCases);

TEST_CASE("random_kept_positions: Lk distinct ascending positions, a pure function") {
  const int L = 64, Lk = 16;
  std::set<std::vector<int>> seen;
  for (std::uint64_t sample = 0; sample < 8; ++sample) {
    const auto keep = dchag::random_kept_positions(3, 5, sample, L, Lk);
    REQUIRE(keep.size() == std::size_t(Lk));
    CHECK(std::is_sorted(keep.begin(), keep.end()));
    CHECK(std::adjacent_find(keep.begin(), keep.end()) == keep.end());
    CHECK(keep.front() >= 0);
    CHECK(keep.back() < L);
    CHECK(keep == dchag::random_kept_positions(3, 5, sample, L, Lk));
    seen.insert(keep);
  }
  CHECK(seen.size() == 8);  // different per sample
  CHECK(dchag::random_kept_positions(3, 6, 0, L, Lk) != dchag::random_kept_positions(3, 5, 0, L, Lk));
  CHECK(dchag::random_kept_positions(4, 5, 0, L, Lk) != dchag::random_kept_positions(3, 5, 0, L, Lk));
  // Over many draws every position is kept about equally often (Lk / L = 1/4 of the time).
  std::vector<int> count(L, 0);
  const int draws = 4000;
  for (int s = 0; s < draws; ++s)
    for (int l : dchag::random_kept_positions(1, 0, s, L, Lk)) ++count[l];
  for (int l = 0; l < L; ++l) {
    CAPTURE(l);
    CHECK(std::abs(count[l] / double(draws) - 0.25) < 0.04);
  }
  CHECK_THROWS_AS(dchag::random_kept_positions(0, 0, 0, 4, 5), dchag::Error);
}

TEST_CASE_TEMPLATE_DEFINE("token gather / scatter move whole rows by the mask", C, mae_tokens) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int B = 2, L = 5, Lk = 2, D = 3;
  dchag::View2<int, Space> ids("ids", B, Lk), slot("slot", B, L);
  const int keep[B][Lk] = {{1, 4}, {0, 2}};
  {
    auto hi = Kokkos::create_mirror_view(ids);
    auto hs = Kokkos::create_mirror_view(slot);
    for (int b = 0; b < B; ++b) {
      for (int l = 0; l < L; ++l) hs(b, l) = -1;
      for (int k = 0; k < Lk; ++k) {
        hi(b, k) = keep[b][k];
        hs(b, keep[b][k]) = k;
      }
    }
    Kokkos::deep_copy(ids, hi);
    Kokkos::deep_copy(slot, hs);
  }
  dchag::View2<T, Space> x("x", B * L, D), kept("kept", B * Lk, D), back("back", B * L, D);
  dchag::View1<T, Space> fill("fill", D), dfill("dfill", D);
  fill_random(x, 1);
  fill_random(fill, 2);
  fill_random(dfill, 3);
  dchag::gather_tokens(space, x, ids, slot, kept);
  const auto X = to_eigen(x), K = to_eigen(kept);
  const auto F = to_eigen_vector(fill);
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < Lk; ++k)
      CHECK((K.row(b * Lk + k) - X.row(b * L + keep[b][k])).cwiseAbs().maxCoeff() == 0);
  dchag::scatter_tokens(space, kept, ids, slot, fill, back);
  auto Y = to_eigen(back);
  dchag::scatter_tokens(space, kept, ids, slot, back);
  auto Z = to_eigen(back);
  auto S = rows_of(slot);
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) {
      const bool masked = S[b][l] < 0;
      CHECK((Y.row(b * L + l).transpose() - (masked ? F : Eigen::VectorXd(X.row(b * L + l).transpose())))
                .cwiseAbs()
                .maxCoeff() == 0);
      CHECK((Z.row(b * L + l) - (masked ? Eigen::RowVectorXd(Eigen::RowVectorXd::Zero(D))
                                         : Eigen::RowVectorXd(X.row(b * L + l))))
                .cwiseAbs()
                .maxCoeff() == 0);
    }
  // sum_masked_rows accumulates the column sums of the masked rows.
  Eigen::VectorXd expect = to_eigen_vector(dfill);
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l)
      if (S[b][l] < 0) expect += X.row(b * L + l).transpose();
  dchag::sum_masked_rows(space, x, slot, dfill);
  CHECK((to_eigen_vector(dfill) - expect).cwiseAbs().maxCoeff() < tol<T>());
  dchag::View2<T, Space> wrong("wrong", B * Lk + 1, D);
  CHECK_THROWS_WITH_AS(dchag::gather_tokens(space, x, ids, slot, wrong),
                       doctest::Contains("'wrong'[5, 3]"), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(mae_tokens, AllCases);

TEST_CASE("ChannelMAE masks: Lk kept per sample, different per sample, reproducible") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Model = dchag::ChannelMAE<double, Space>;
  Space space;
  auto cfg = tiny_model();
  cfg.height = cfg.width = 32;  // L = 64
  const auto mc = tiny_mae(0.75);
  Model model(cfg, mc);
  REQUIRE(model.patches() == 64);
  REQUIRE(model.kept_patches() == 16);
  const int B = 4, L = 64, Lk = 16;
  dchag::View4<double, Space> x("x", B, cfg.channels, cfg.height, cfg.width);
  fill_random(x, 1);
  auto pred = model.forward(space, x, 7);
  CHECK(pred.extent(0) == std::size_t(B));
  CHECK(pred.extent(1) == std::size_t(L));
  CHECK(pred.extent(2) == std::size_t(4 * 4 * cfg.channels));
  CHECK(model.mask_step() == 7);
  const auto mask = rows_of(model.mask());
  const auto ids = rows_of(model.kept_ids());
  REQUIRE(mask.size() == std::size_t(B));
  for (int b = 0; b < B; ++b) {
    CAPTURE(b);
    CHECK(std::count(mask[b].begin(), mask[b].end(), 1) == L - Lk);
    CHECK(std::count(mask[b].begin(), mask[b].end(), 0) == Lk);
    CHECK(ids[b] == dchag::random_kept_positions(cfg.seed, 7, b, L, Lk));
    for (int l : ids[b]) CHECK(mask[b][l] == 0);
    for (int c = 0; c < b; ++c) CHECK(mask[b] != mask[c]);
  }
  // The same step gives the same masks, in this model or any other with the seed, whatever
  // the batch size (a sample's mask depends on its index, not on its batch-mates).
  model.forward(space, x, 8);
  CHECK(rows_of(model.mask()) != mask);
  model.forward(space, x, 7);
  CHECK(rows_of(model.mask()) == mask);
  Model twin(cfg, mc);
  dchag::View4<double, Space> x2("x2", 2, cfg.channels, cfg.height, cfg.width);
  twin.forward(space, x2, 7);
  const auto twin_mask = rows_of(twin.mask());
  CHECK(twin_mask[0] == mask[0]);
  CHECK(twin_mask[1] == mask[1]);
  auto other_seed = cfg;
  other_seed.seed = cfg.seed + 1;
  Model other(other_seed, mc);
  other.forward(space, x, 7);
  CHECK(rows_of(other.mask()) != mask);

  // Lk = round(L (1 - mask_ratio)).
  for (const auto& rk :
       std::vector<std::pair<double, int>>{{0.75, 16}, {0.6, 26}, {0.9, 6}, {0.5, 32}}) {
    const double ratio = rk.first;
    const int kept = rk.second;
    CAPTURE(ratio);
    CHECK(tiny_mae(ratio).kept(64) == kept);
    CHECK(Model(cfg, tiny_mae(ratio)).kept_patches() == kept);
  }
}

TEST_CASE("ChannelMAE: the loss is over masked patches only, and masked inputs are unseen") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  auto cfg = tiny_model();
  cfg.width = 16;  // L = 8, Lk = 2
  dchag::ChannelMAE<double, Space> model(cfg, tiny_mae(0.75));
  randomise(model.parameters(), 5);
  const int B = 2, L = model.patches(), P = model.patch_values();
  dchag::View4<double, Space> x("x", B, cfg.channels, cfg.height, cfg.width);
  dchag::View3<double, Space> target("target", B, L, P), dpred("dpred", B, L, P);
  fill_random(x, 1);
  // The target is the patchified image (all channels).
  dchag::mae_target(space, x, cfg.patch, target);
  {
    dchag::View2<double, Space> flat("flat", B * L, P);
    dchag::patchify(space, x, cfg.patch, flat);
    CHECK(host_values(flat) == host_values(target));
  }
  const std::uint64_t step = 3;
  auto loss = [&] {
    return dchag::masked_mse(space, model.forward(space, x, step), target, model.mask(), dpred);
  };
  const double l0 = loss();
  const auto pred0 = host_values(model.forward(space, x, step));
  const auto mask = rows_of(model.mask());
  auto th = to_host(target);
  auto xh = to_host(x);
  const int gw = cfg.width / cfg.patch;
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) {
      CAPTURE(b);
      CAPTURE(l);
      // A patch's target: the loss moves only if the patch is masked.
      const double saved = th(b, l, 5);
      th(b, l, 5) = saved + 1.0;
      Kokkos::deep_copy(target, th);
      const double l1 = loss();
      th(b, l, 5) = saved;
      Kokkos::deep_copy(target, th);
      if (mask[b][l] == 0) CHECK(l1 == l0);
      else CHECK(l1 != l0);
      // A patch's pixels in the input: the prediction moves only if the encoder saw the patch
      // (tokenization and aggregation never mix patches).
      const int h = (l / gw) * cfg.patch + 1, w = (l % gw) * cfg.patch + 2;
      const double pixel = xh(b, 1, h, w);
      xh(b, 1, h, w) = pixel + 1.0;
      Kokkos::deep_copy(x, xh);
      const auto pred1 = host_values(model.forward(space, x, step));
      xh(b, 1, h, w) = pixel;
      Kokkos::deep_copy(x, xh);
      if (mask[b][l] == 1) CHECK(pred1 == pred0);
      else CHECK(pred1 != pred0);
    }
  // The gradient handed to backward is zero on every kept patch.
  loss();
  auto dh = to_host(dpred);
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l)
      if (mask[b][l] == 0)
        for (int p = 0; p < P; ++p) CHECK(dh(b, l, p) == 0.0);
}

TEST_CASE("ChannelMAE parameters carry MAE's names and logical shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  auto cfg = tiny_model();
  cfg.depth = 2;
  auto mc = tiny_mae(0.75);
  mc.decoder_dim = 12;
  mc.decoder_heads = 3;
  mc.decoder_depth = 2;
  dchag::ChannelMAE<float, Space> model(cfg, mc);
  CHECK(model.grid().size() == 1);
  CHECK(model.channel_begin() == 0);
  CHECK(model.channel_count() == 4);
  std::map<std::string, std::vector<std::size_t>> shape;
  std::map<std::string, bool> decay;
  const auto params = model.parameters();
  for (const auto& p : params) {
    CHECK(shape.count(p.name) == 0);
    shape[p.name] = p.shape;
    decay[p.name] = p.decay;
  }
  using S = std::vector<std::size_t>;
  CHECK(shape.at("token_embeds.3.proj.weight") == S{8, 1, 4, 4});
  CHECK(shape.at("var_embed") == S{1, 4, 8});
  CHECK(shape.at("pos_embed") == S{1, 4, 8});
  CHECK(shape.at("blocks.1.attn.qkv.weight") == S{24, 8});
  CHECK(shape.at("norm.weight") == S{8});
  CHECK(shape.at("decoder_embed.weight") == S{12, 8});
  CHECK(shape.at("decoder_embed.bias") == S{12});
  CHECK(shape.at("mask_token") == S{1, 1, 12});
  CHECK(!decay.at("mask_token"));
  CHECK(shape.at("decoder_pos_embed") == S{1, 4, 12});
  CHECK(shape.at("decoder_blocks.1.mlp.fc1.weight") == S{24, 12});  // decoder_mlp_ratio 2
  CHECK(shape.at("decoder_norm.bias") == S{12});
  CHECK(shape.at("decoder_pred.weight") == S{64, 12});
  CHECK(shape.at("decoder_pred.bias") == S{64});
  CHECK(params.back().name == "decoder_pred.bias");
  // No forecast-head or lead-time parameters.
  for (const auto& p : params) {
    CHECK(p.name.rfind("head.", 0) != 0);
    CHECK(p.name.rfind("lead_time_embed", 0) != 0);
  }
  // mask_token ~ trunc_normal(0.02): small, not all zero, within two standard deviations.
  double biggest = 0;
  for (const auto& p : params)
    if (p.name == "mask_token")
      for (double v : host_values(p.value)) biggest = std::max(biggest, std::abs(v));
  CHECK(biggest > 0);
  CHECK(biggest <= 0.04 + 1e-7);
  // The encoder runs on Lk of L tokens: masking more costs less.
  dchag::ChannelMAE<float, Space> half(cfg, [&] {
    auto m = mc;
    m.mask_ratio = 0.5;
    return m;
  }());
  CHECK(model.forward_flops(2) < half.forward_flops(2));
  CHECK(model.forward_flops(2) > 0);
}

TEST_CASE("ChannelMAE initialisation: MAE's xavier-uniform weights, or ChannelViT's") {
  using Space = Kokkos::DefaultExecutionSpace;
  auto cfg = tiny_model();
  cfg.dim = 16;
  auto mc = tiny_mae(0.75);
  mc.decoder_dim = 16;
  dchag::ChannelMAE<double, Space> mae(cfg, mc);
  std::size_t xavier = 0;
  for (const auto& p : mae.parameters()) {
    CAPTURE(p.name);
    const auto v = host_values(p.value);
    double biggest = 0, squares = 0;
    for (double x : v) {
      biggest = std::max(biggest, std::abs(x));
      squares += x * x;
    }
    if (p.decay && p.shape.size() >= 2) {
      std::size_t fan_in = 1;
      for (std::size_t d = 1; d < p.shape.size(); ++d) fan_in *= p.shape[d];
      const double bound = std::sqrt(6.0 / double(fan_in + p.shape[0]));
      CHECK(biggest <= bound);
      CHECK(biggest > 0.8 * bound);
      if (v.size() >= 200)  // U(-a, a) has variance a^2 / 3
        CHECK(squares / v.size() == doctest::Approx(bound * bound / 3).epsilon(0.15));
      ++xavier;
    } else if (p.name.rfind("token_embeds.", 0) == 0 && ends_with(p.name, ".bias")) {
      // Conv2d's default, which neither MAE's nor ClimaX's initialize_weights resets.
      CHECK(biggest > 0);
      CHECK(biggest <= 1.0 / cfg.patch);
    } else if (ends_with(p.name, ".bias")) {
      CHECK(biggest == 0);
    } else if (p.name == "mask_token") {
      CHECK(biggest > 0);
      CHECK(biggest <= 0.04);
    }
  }
  CHECK(xavier > 10);

  // Without it the weights are the layers' own: the encoder starts exactly as ChannelViT's.
  // With it, the one tensor PyTorch already initialises xavier-uniform (var_agg's in_proj) is
  // unchanged, whichever code wrote it.
  mc.xavier_init = false;
  dchag::ChannelMAE<double, Space> climax(cfg, mc);
  dchag::ChannelViT<double, Space> vit(cfg);
  std::map<std::string, std::vector<double>> vit_values;
  for (const auto& p : vit.parameters()) vit_values[p.name] = host_values(p.value);
  std::size_t shared = 0;
  for (const auto& p : climax.parameters()) {
    CAPTURE(p.name);
    if (vit_values.count(p.name) == 0) continue;
    CHECK(host_values(p.value) == vit_values[p.name]);
    ++shared;
  }
  CHECK(shared == vit_values.size() - 6);  // all but lead_time_embed.* and head.{0,2}.*
  for (const auto& p : mae.parameters())
    if (p.name == "var_agg.in_proj_weight") CHECK(host_values(p.value) == vit_values[p.name]);
}

TEST_CASE("xavier_uniform writes exactly the held pieces of the logical tensor") {
  using Space = Kokkos::DefaultExecutionSpace;
  using P = dchag::Parameter<double, Space>;
  const std::vector<std::size_t> shape{6, 4};
  dchag::View1<double, Space> full("full", 24), part("part", 14), grad("grad", 24);
  P whole{"blocks.0.attn.qkv.weight", shape, full, grad, true, {}, false};
  // Rows [1, 3) whole, and rows [4, 6) x columns [1, 4).
  P pieces{"blocks.0.attn.qkv.weight", shape, part, grad, true,
           {dchag::LogicalBox{{1, 0}, {2, 4}}, dchag::LogicalBox{{4, 1}, {2, 3}}}, true};
  dchag::Impl::xavier_uniform(whole, 3);
  dchag::Impl::xavier_uniform(pieces, 3);
  const auto f = host_values(full), q = host_values(part);
  std::vector<double> expect;
  for (std::size_t i = 1; i < 3; ++i)
    for (std::size_t j = 0; j < 4; ++j) expect.push_back(f[i * 4 + j]);
  for (std::size_t i = 4; i < 6; ++i)
    for (std::size_t j = 1; j < 4; ++j) expect.push_back(f[i * 4 + j]);
  CHECK(q == expect);
  // The same values the library's slice-aware initialiser gives for that part of the tensor.
  dchag::View2<double, Space> block("block", 2, 3);
  const double bound = std::sqrt(6.0 / 10.0);
  dchag::uniform(block, 3, dchag::stream_id("blocks.0.attn.qkv.weight"), -bound, bound,
                 dchag::LogicalSlice{shape, {4, 1}});
  CHECK(host_values(block) == std::vector<double>(expect.begin() + 8, expect.end()));
  P vector_param{"x.bias", {24}, full, grad, false, {}, false};
  CHECK_THROWS_WITH_AS(dchag::Impl::xavier_uniform(vector_param, 3),
                       doctest::Contains("'x.bias' has rank 1"), dchag::Error);
}

TEST_CASE("ChannelMAE refuses nonsense definitions before allocating anything") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Model = dchag::ChannelMAE<double, Space>;
  auto refused = [](const dchag::ModelConfig& c, const dchag::MaeConfig& m,
                    const std::vector<std::string>& parts) {
    CAPTURE(c.describe());
    CAPTURE(m.describe());
    check_refused([&] { Model model(c, m); }, parts);
  };
  for (double r : {0.0, 1.0, -0.5, 1.5}) {
    CAPTURE(r);
    refused(tiny_model(), tiny_mae(r), {"mask_ratio must lie in (0, 1)"});
  }
  refused(tiny_model(), tiny_mae(0.9), {"mask_ratio 0.9 keeps 0 of the 4 patches"});
  refused(tiny_model(), tiny_mae(0.1), {"mask_ratio 0.1 keeps 4 of the 4 patches"});
  auto m = tiny_mae();
  m.decoder_dim = 12;
  m.decoder_heads = 5;
  refused(tiny_model(), m, {"decoder_dim 12", "decoder_heads 5"});
  m = tiny_mae();
  m.decoder_dim = 6;
  m.decoder_heads = 3;
  refused(tiny_model(), m, {"decoder_dim 6", "divisible by 4"});
  m = tiny_mae();
  m.decoder_dim = 0;
  refused(tiny_model(), m, {"decoder_dim (0)"});
  m = tiny_mae();
  m.decoder_depth = -1;
  refused(tiny_model(), m, {"decoder_depth (-1)"});
  // The model part is refused as ChannelViT refuses it.
  auto c = tiny_model();
  c.height = 10;
  refused(c, tiny_mae(), {"image 10x8", "patch 4"});
  c = tiny_model({3, 1});
  refused(c, tiny_mae(), {"reduces 4 tokens to 3"});
  c = tiny_model();
  c.channels = 0;
  refused(c, tiny_mae(), {"channels must be positive, got 0"});

  Space space;
  Model model(tiny_model(), tiny_mae());
  dchag::View4<double, Space> bad("x", 2, 3, 8, 8);
  CHECK_THROWS_WITH_AS(model.forward(space, bad, 0), doctest::Contains("'x'[2, 3, 8, 8]"),
                       dchag::Error);
  dchag::View3<double, Space> d("d", 2, 4, 64);
  CHECK_THROWS_WITH_AS(model.backward(space, d), doctest::Contains("before forward"),
                       dchag::Error);
  dchag::View4<double, Space> x("x", 2, 4, 8, 8);
  model.forward(space, x, 0);
  dchag::View3<double, Space> wrong("wrong", 2, 4, 63);
  CHECK_THROWS_WITH_AS(model.backward(space, wrong), doctest::Contains("'wrong'[2, 4, 63]"),
                       dchag::Error);
}

TEST_CASE("MaeTrainer pre-trains on hyperspectral cubes on the default single-rank grid") {
  using Space = Kokkos::DefaultExecutionSpace;
  using T = double;
  Space space;
  dchag::ModelConfig cfg;
  cfg.channels = 16;
  cfg.height = cfg.width = 16;
  cfg.patch = 4;
  cfg.dim = 16;
  cfg.depth = 1;
  cfg.heads = 2;
  cfg.levels = {4, 1};
  cfg.seed = 1;
  dchag::MaeConfig mc;
  mc.decoder_dim = 16;
  mc.decoder_depth = 1;
  mc.decoder_heads = 2;
  dchag::ChannelMAE<T, Space> model(cfg, mc);
  dchag::TrainConfig tc;
  tc.steps = 60;
  tc.lr = 1e-2;
  tc.warmup_steps = 5;
  dchag::MaeTrainer<decltype(model)> trainer(model, tc);

  dchag::HyperspectralConfig hc;
  hc.bands = cfg.channels;
  hc.height = cfg.height;
  hc.width = cfg.width;
  hc.seed = 2;
  dchag::HyperspectralGenerator<T> data(hc);
  dchag::View4<T, Space> x("x", 4, cfg.channels, cfg.height, cfg.width);
  data.fill(dchag::Split::Train, 0, x);
  // A tiny model on four scenes, masks changing every step: it must at least learn these
  // scenes. The loss on them under a mask no training step draws, before and after:
  const int L = model.patches(), P = model.patch_values();
  dchag::View3<T, Space> target("target", 4, L, P), dpred("dpred", 4, L, P);
  dchag::mae_target(space, x, cfg.patch, target);
  auto evaluate = [&] {
    return dchag::masked_mse(space, model.forward(space, x, 1000), target, model.mask(), dpred);
  };
  const double before = evaluate();
  for (int s = 0; s < tc.steps; ++s) {
    const auto r = trainer.step(space, x);
    CHECK(r.step == s);
    CHECK(model.mask_step() == std::uint64_t(s));  // the mask of step s
    CHECK(std::isfinite(r.loss));
    CHECK(std::isfinite(r.grad_norm));
  }
  CHECK(trainer.step_count() == tc.steps);
  const double after = evaluate();
  CAPTURE(before);
  CAPTURE(after);
  CHECK(after < 0.75 * before);
  // The input (and target) must hold the rank's channels: all of them on one rank.
  dchag::View4<T, Space> partial("partial", 4, cfg.channels - 1, cfg.height, cfg.width);
  CHECK_THROWS_WITH_AS(trainer.step(space, partial), doctest::Contains("'partial'[4, 15"),
                       dchag::Error);
}
