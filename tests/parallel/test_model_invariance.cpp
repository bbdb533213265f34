// Partition invariance, the correctness contract of the parallel model: for a fixed model
// definition, seed and data, the losses and every parameter after a few training steps are the
// same on every grid that divides the work as on one rank.
#include <dchag/model/channel_vit.hpp>
#include <dchag/train/trainer.hpp>

#include <map>
#include <vector>

#include "partition_check.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

using Space = Kokkos::DefaultExecutionSpace;

dchag::ModelConfig tiny_config(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = c.out_channels = 8;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 2;
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 42;
  return c;
}

template <class Policy>
Run train(const dchag::ModelConfig& cfg, const dchag::ProcessGrid& grid, int global_batch,
          int steps, std::vector<dchag::Parameter<double, Space>>& keep) {
  using T = double;
  Space space;
  dchag::ChannelViT<T, Space, Policy> model(cfg, grid);
  dchag::TrainConfig tc;
  tc.steps = 20;
  tc.lr = 5e-3;
  tc.warmup_steps = 1;
  tc.max_grad_norm = 0.5;  // small enough that clipping is exercised
  dchag::ForecastTrainer<decltype(model)> trainer(model, tc);

  // The global batch, identical on every rank; each rank keeps its samples and channels.
  const int B = global_batch / grid.data_size(), b0 = grid.data_rank() * B;
  dchag::View4<T, Space> xg("xg", global_batch, cfg.channels, cfg.height, cfg.width);
  dchag::View4<T, Space> yg("yg", global_batch, cfg.out_channels, cfg.height, cfg.width);
  dchag::View1<T, Space> leadg("leadg", global_batch), w("w", cfg.height);
  fill_random(xg, 1);
  fill_random(yg, 2);
  fill_random(leadg, 3, 0.0, 1.0);
  fill_random(w, 4, 0.5, 1.5);
  const auto rows = Kokkos::make_pair(b0, b0 + B);
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  dchag::View4<T, Space> x("x", B, model.channel_count(), cfg.height, cfg.width);
  dchag::View4<T, Space> y("y", B, cfg.out_channels, cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", B);
  Kokkos::deep_copy(x, Kokkos::subview(xg, rows, chans, Kokkos::ALL, Kokkos::ALL));
  Kokkos::deep_copy(y, Kokkos::subview(yg, rows, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL));
  Kokkos::deep_copy(lead, Kokkos::subview(leadg, rows));

  Run run;
  for (int s = 0; s < steps; ++s) run.losses.push_back(trainer.step(space, x, y, lead, w).loss);
  keep = model.parameters();
  record_parameters(keep, run);
  return run;
}

template <class Policy>
void check_grid(const dchag::ModelConfig& cfg, int tp, int fsdp, int dp) {
  const int global_batch = 4, steps = 3;
  std::vector<dchag::Parameter<double, Space>> ref_params, par_params;
  const Run ref = train<Policy>(cfg, dchag::ProcessGrid::single(), global_batch, steps, ref_params);
  const dchag::ProcessGrid grid(dchag::Communicator(), tp, fsdp, dp);
  const Run par = train<Policy>(cfg, grid, global_batch, steps, par_params);
  check_partition_invariance(ref, ref_params, par, par_params, grid);
}

template <class Policy>
void check_all_grids(const dchag::ModelConfig& cfg) {
  const int world = dchag::Communicator().size();
  for (int dp = 1; dp <= world; ++dp) {
    if (world % dp != 0 || 4 % dp != 0) continue;
    check_grid<Policy>(cfg, world / dp, 1, dp);
  }
  // Model sharding: alone, with tensor parallelism, and with data parallelism.
  if (world > 1) check_grid<Policy>(cfg, 1, world, 1);
  if (world == 4) {
    check_grid<Policy>(cfg, 2, 2, 1);
    check_grid<Policy>(cfg, 1, 2, 2);
  }
}

}  // namespace

TEST_CASE("partition invariance: tensor-parallel baseline (ClimaX aggregation)") {
  check_all_grids<dchag::TensorParallel>(tiny_config({1}));
}

TEST_CASE("partition invariance: tensor parallel with a replicated hierarchy") {
  check_all_grids<dchag::ReplicatedChannels<dchag::CrossAttentionAggregator>>(tiny_config({4, 1}));
}

TEST_CASE("partition invariance: D-CHAG-L") {
  check_all_grids<dchag::DistributedChannels<dchag::LinearAggregator>>(tiny_config({4, 1}));
}

TEST_CASE("partition invariance: D-CHAG-C with a three-level tree") {
  auto cfg = tiny_config({8, 4, 1});
  cfg.channels = cfg.out_channels = 16;
  check_all_grids<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(cfg);
}

TEST_CASE("partition invariance: D-CHAG over raw channel tokens (levels {1})") {
  check_all_grids<dchag::DistributedChannels<dchag::LinearAggregator>>(tiny_config({1}));
}

TEST_CASE("impossible splits are refused on every rank") {
  const dchag::Communicator world;
  if (world.size() < 2) return;
  using Model = dchag::ChannelViT<double, Space, dchag::DistributedChannels<dchag::LinearAggregator>>;
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  auto heads = tiny_config({4, 1});
  heads.heads = 2;
  heads.dim = 16;
  if (world.size() == 4) {
    CHECK_THROWS_WITH_AS(Model(heads, grid),
                         doctest::Contains("heads = 2"), dchag::Error);
  }
  // 8 channels in groups of 4 (levels {2, 1}): 4 ranks would each own half a group.
  if (world.size() == 4) {
    CHECK_THROWS_WITH_AS(Model(tiny_config({2, 1}), grid),
                         doctest::Contains("whole groups"), dchag::Error);
  }
  auto odd = tiny_config({1});
  odd.channels = odd.out_channels = 7;
  CHECK_THROWS_WITH_AS(Model(odd, grid),
                       doctest::Contains("7 channels"), dchag::Error);
}

TEST_CASE("ranks that disagree on the model are told so, on every rank") {
  const dchag::Communicator world;
  if (world.size() < 2) return;
  using Baseline = dchag::ChannelViT<double, Space, dchag::TensorParallel>;
  auto cfg = tiny_config({1});
  if (world.rank() == 1) cfg.depth = 3;
  // Tensor parallel, and sharded (where a different depth would mean other units to gather).
  for (const int fsdp : {1, world.size()}) {
    CAPTURE(fsdp);
    const dchag::ProcessGrid grid(world, world.size() / fsdp, fsdp, 1);
    CHECK_THROWS_WITH_AS(Baseline(cfg, grid), doctest::Contains("differs"), dchag::Error);
    // Collectives still work afterwards: nobody is stuck.
    CHECK(dchag::all_reduce_sum(world, 1.0) == double(world.size()));
  }
}
