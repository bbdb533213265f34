// A warmed-up training step allocates nothing: activations, scratch, loss gradients, the
// optimizer's moments and tables are all sized by the first steps and reused after. Counted
// with the memory tracker (every Kokkos allocation in every space), so a layer that starts
// allocating a temporary per step fails here, not only in a profile.
#include <dchag/core/memory_tracker.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/mae_trainer.hpp>
#include <dchag/train/trainer.hpp>

#include <cstdint>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

dchag::ModelConfig small_model(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 2;
  c.heads = 2;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.lead_time = true;
  c.seed = 3;
  return c;
}

// Allocations of each of `steps` calls of step().
template <class Step>
std::vector<std::uint64_t> allocations_per_step(int steps, Step&& step) {
  dchag::MemoryTracker::install();
  std::vector<std::uint64_t> counts;
  for (int s = 0; s < steps; ++s) {
    const std::uint64_t before = dchag::MemoryTracker::allocation_count();
    step();
    counts.push_back(dchag::MemoryTracker::allocation_count() - before);
  }
  return counts;
}

template <class Policy, class T, class Space>
void check_forecast(const dchag::ModelConfig& cfg) {
  Space space;
  dchag::ChannelViT<T, Space, Policy> model(cfg);
  dchag::ForecastTrainer<decltype(model)> trainer(model, dchag::TrainConfig{});
  const int B = 2;
  dchag::View4<T, Space> x("x", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<T, Space> y("y", B, cfg.out_channels(), cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", B), w("w", cfg.height);
  fill_random(x, 1);
  fill_random(y, 2);
  fill_random(lead, 3, 0.2, 1.0);
  fill_random(w, 4, 0.5, 1.5);
  const auto counts = allocations_per_step(5, [&] { trainer.step(space, x, y, lead, w); });
  CHECK(counts[0] > 0);  // the tracker sees the first step's activations
  for (std::size_t s = 2; s < counts.size(); ++s) {
    CAPTURE(s);
    CHECK(counts[s] == 0);
  }
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("a forecasting training step allocates nothing after warm-up", C,
                          forecast_allocations) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using namespace dchag;
  SUBCASE("baseline (ClimaX aggregation)") {
    check_forecast<TensorParallel, T, Space>(small_model({1}));
  }
  SUBCASE("D-CHAG-L") {
    check_forecast<DistributedChannels<LinearAggregator>, T, Space>(small_model({2, 1}));
  }
  SUBCASE("D-CHAG-C") {
    check_forecast<DistributedChannels<CrossAttentionAggregator>, T, Space>(small_model({2, 1}));
  }
}
TEST_CASE_TEMPLATE_APPLY(forecast_allocations, AllCases);

TEST_CASE_TEMPLATE_DEFINE("a masked-autoencoder training step allocates nothing after warm-up",
                          C, mae_allocations) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const auto cfg = small_model({2, 1});
  dchag::MaeConfig mc;
  mc.decoder_dim = 16;
  mc.decoder_depth = 1;
  mc.decoder_heads = 2;
  dchag::ChannelMAE<T, Space, dchag::DistributedChannels<dchag::LinearAggregator>> model(cfg, mc);
  dchag::MaeTrainer<decltype(model)> trainer(model, dchag::TrainConfig{});
  dchag::View4<T, Space> x("x", 2, cfg.channels, cfg.height, cfg.width);
  fill_random(x, 5);
  // Every step draws a new mask: the kept patches move, the buffers must not.
  const auto counts = allocations_per_step(5, [&] { trainer.step(space, x); });
  for (std::size_t s = 2; s < counts.size(); ++s) {
    CAPTURE(s);
    CHECK(counts[s] == 0);
  }
}
TEST_CASE_TEMPLATE_APPLY(mae_allocations, AllCases);

TEST_CASE_TEMPLATE_DEFINE("AdamW steps over a list rebuilt from the model allocate nothing", C,
                          adamw_allocations) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::ChannelViT<T, Space> model(small_model({2, 1}));
  dchag::AdamW<T, Space> opt(model.parameters());
  const auto counts = allocations_per_step(4, [&] { opt.step(space, model.parameters(), 1e-3); });
  for (std::size_t s = 1; s < counts.size(); ++s) {
    CAPTURE(s);
    CHECK(counts[s] == 0);
  }
}
TEST_CASE_TEMPLATE_APPLY(adamw_allocations, AllCases);
