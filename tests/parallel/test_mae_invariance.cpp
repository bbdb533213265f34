// Partition invariance of the masked autoencoder: a few MaeTrainer steps on any grid (tensor
// parallel, sharded, data parallel, mixed) give the losses and parameters of the single-rank run.
#include <dchag/model/mae.hpp>
#include <dchag/train/mae_trainer.hpp>

#include <vector>

#include "partition_check.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = double;

template <class Policy>
Run train(const dchag::ProcessGrid& grid, std::vector<dchag::Parameter<T, Space>>& keep) {
  Space space;
  dchag::ModelConfig cfg;
  cfg.channels = 8;
  cfg.height = 8;
  cfg.width = 16;
  cfg.patch = 4;
  cfg.dim = 16;
  cfg.depth = 2;
  cfg.heads = 4;
  cfg.levels = {4, 1};
  cfg.seed = 5;
  dchag::MaeConfig mc;
  mc.decoder_dim = 16;
  mc.decoder_depth = 1;
  mc.decoder_heads = 4;
  dchag::ChannelMAE<T, Space, Policy> model(cfg, mc, grid);
  dchag::TrainConfig tc;
  tc.steps = 20;
  tc.lr = 5e-3;
  tc.warmup_steps = 1;
  tc.max_grad_norm = 0.5;
  dchag::MaeTrainer<decltype(model)> trainer(model, tc);

  const int global_batch = 4;
  const int B = global_batch / grid.data_size(), b0 = grid.data_rank() * B;
  dchag::View4<T, Space> xg("xg", global_batch, cfg.channels, cfg.height, cfg.width);
  fill_random(xg, 7);
  const auto rows = Kokkos::make_pair(b0, b0 + B);
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  dchag::View4<T, Space> x("x", B, model.channel_count(), cfg.height, cfg.width);
  Kokkos::deep_copy(x, Kokkos::subview(xg, rows, chans, Kokkos::ALL, Kokkos::ALL));

  Run run;
  for (int s = 0; s < 3; ++s) run.losses.push_back(trainer.step(space, x).loss);
  keep = model.parameters();
  record_parameters(keep, run);
  return run;
}

template <class Policy>
void check_grids() {
  const int world = dchag::Communicator().size();
  std::vector<std::vector<int>> grids = {{world, 1, 1}};  // tp x fsdp x dp
  if (world > 1) {
    grids.push_back({1, world, 1});
    grids.push_back({1, 1, world});
  }
  if (world == 4) {
    grids.push_back({2, 2, 1});
    grids.push_back({1, 2, 2});
  }
  std::vector<dchag::Parameter<T, Space>> ref_params;
  const Run ref = train<Policy>(dchag::ProcessGrid::single(), ref_params);
  for (const auto& g : grids) {
    const dchag::ProcessGrid grid(dchag::Communicator(), g[0], g[1], g[2]);
    std::vector<dchag::Parameter<T, Space>> par_params;
    const Run par = train<Policy>(grid, par_params);
    check_partition_invariance(ref, ref_params, par, par_params, grid);
  }
}

}  // namespace

TEST_CASE("partition invariance of the MAE: D-CHAG-L") {
  check_grids<dchag::DistributedChannels<dchag::LinearAggregator>>();
}

TEST_CASE("partition invariance of the MAE: tensor-parallel baseline") {
  check_grids<dchag::TensorParallel>();
}
