// Partition invariance of the forecasting model: a few training steps on a grid against the
// same steps on one rank, for any policy (the library's or a user's).
#ifndef DCHAG_TESTS_FORECAST_INVARIANCE_HPP
#define DCHAG_TESTS_FORECAST_INVARIANCE_HPP

#include <dchag/model/channel_vit.hpp>
#include <dchag/train/trainer.hpp>

#include <vector>

#include "partition_check.hpp"
#include "test_common.hpp"

namespace dchag_test {

using Space = Kokkos::DefaultExecutionSpace;

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
  dchag::View4<T, Space> yg("yg", global_batch, cfg.out_channels(), cfg.height, cfg.width);
  dchag::View1<T, Space> leadg("leadg", global_batch), w("w", cfg.height);
  fill_random(xg, 1);
  fill_random(yg, 2);
  fill_random(leadg, 3, 0.0, 1.0);
  fill_random(w, 4, 0.5, 1.5);
  const auto rows = Kokkos::make_pair(b0, b0 + B);
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  dchag::View4<T, Space> x("x", B, model.channel_count(), cfg.height, cfg.width);
  const auto y = predicted_targets(model, yg, rows);
  dchag::View1<T, Space> lead("lead", B);
  Kokkos::deep_copy(x, Kokkos::subview(xg, rows, chans, Kokkos::ALL, Kokkos::ALL));
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

}  // namespace dchag_test

#endif
