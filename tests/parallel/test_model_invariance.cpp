// Partition invariance, the correctness contract of the parallel model: for a fixed model
// definition, seed and data, the losses and every parameter after a few training steps are the
// same on every grid that divides the work as on one rank.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "forecast_invariance.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

dchag::ModelConfig tiny_config(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = 8;
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
  cfg.channels = 16;
  check_all_grids<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(cfg);
}

TEST_CASE("partition invariance: D-CHAG over raw channel tokens (levels {1})") {
  check_all_grids<dchag::DistributedChannels<dchag::LinearAggregator>>(tiny_config({1}));
}

// The head predicts every variable (replicated over tp under the baseline, split by channel
// under D-CHAG; sliced under fsdp) and the loss sees the output variables, here fewer than the
// inputs and not in their order: at tp = 4 with four groups of two channels, rank 2 owns none
// of them and trains on no target at all.
dchag::ModelConfig named_subset(dchag::ModelConfig c) {
  c.variables = {"z500", "t850", "t2m", "u10", "v10", "q700", "r850", "tp"};
  c.out_variables = {"tp", "t2m", "z500"};
  return c;
}

TEST_CASE("partition invariance: output variables a subset in another order, baseline") {
  check_all_grids<dchag::TensorParallel>(named_subset(tiny_config({1})));
}

TEST_CASE("partition invariance: output variables a subset in another order, D-CHAG-C") {
  check_all_grids<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(
      named_subset(tiny_config({4, 1})));
}

// D-CHAG all the way to the output: a rank predicts only the output variables of its own
// channels (and its head's last Linear computes only its channels), and the ranks' parts joined
// are the single-rank prediction.
TEST_CASE("D-CHAG: each TP rank predicts its own channels' outputs; joined, one rank's") {
  using Policy = dchag::DistributedChannels<dchag::LinearAggregator>;
  using T = double;
  Space space;
  const auto cfg = named_subset(tiny_config({4, 1}));
  const int B = 2;
  dchag::View4<T, Space> xg("xg", B, cfg.channels, cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", B);
  fill_random(xg, 1);
  fill_random(lead, 3, 0.0, 1.0);
  dchag::ChannelViT<T, Space, Policy> one(cfg);
  const auto ref = to_host(one.forward(space, xg, lead));
  REQUIRE(ref.extent(1) == 3);

  const int world = dchag::Communicator().size();
  const dchag::ProcessGrid grid(dchag::Communicator(), world, 1, 1);
  dchag::ChannelViT<T, Space, Policy> model(cfg, grid);
  const int c0 = model.channel_begin(), cn = model.channel_count();
  dchag::View4<T, Space> x("x", B, cn, cfg.height, cfg.width);
  Kokkos::deep_copy(x, Kokkos::subview(xg, Kokkos::ALL, Kokkos::make_pair(c0, c0 + cn),
                                       Kokkos::ALL, Kokkos::ALL));
  const auto pred = model.forward(space, x, lead);
  std::vector<int> expected;  // outputs tp, t2m, z500 = channels 7, 2, 0
  for (int k = 0; k < 3; ++k)
    if (cfg.output_indices()[k] >= c0 && cfg.output_indices()[k] < c0 + cn) expected.push_back(k);
  CHECK(model.distributes_outputs() == (world > 1));
  CHECK(model.predicted_outputs() == expected);
  CHECK(pred.extent(1) == expected.size());
  CHECK(model.full_prediction().extent(1) == std::size_t(cn));
  const auto mine = to_host(pred);
  for (std::size_t k = 0; k < expected.size(); ++k)
    for (int h = 0; h < cfg.height; ++h)
      for (int w = 0; w < cfg.width; ++w)
        CHECK(std::abs(mine(1, k, h, w) - ref(1, expected[k], h, w)) < 1e-12);
  const auto joined = to_host(model.gather_prediction(space, pred));
  REQUIRE(joined.extent(1) == ref.extent(1));
  double worst = 0;
  for (std::size_t i = 0; i < joined.size(); ++i)
    worst = std::max(worst, std::abs(joined.data()[i] - ref.data()[i]));
  CHECK(worst < 1e-12);
  // The targets must be this rank's outputs, not all of them (under D-CHAG).
  if (world > 1) {
    dchag::ForecastTrainer<decltype(model)> trainer(model, dchag::TrainConfig{});
    dchag::View4<T, Space> all_targets("all_targets", B, 3, cfg.height, cfg.width);
    dchag::View1<T, Space> w("w", cfg.height);
    Kokkos::deep_copy(w, 1.0);
    CHECK_THROWS_WITH_AS(trainer.step(space, x, all_targets, lead, w),
                         doctest::Contains("predicted_outputs()"), dchag::Error);
  }
}

// Dropout and drop-path in training (ClimaX's regularisation, stronger here so that every site
// drops something in a tiny model): the masks are keyed by global sample and logical feature,
// so every grid drops the same elements as one rank.
TEST_CASE("partition invariance with dropout and drop-path: tensor-parallel baseline") {
  auto cfg = tiny_config({1});
  cfg.drop_rate = 0.2;
  cfg.drop_path_rate = 0.3;
  // Dropout is on at all: the single-rank losses differ from those without it.
  std::vector<dchag::Parameter<double, Space>> a, b;
  const Run with = train<dchag::TensorParallel>(cfg, dchag::ProcessGrid::single(), 4, 2, a);
  const Run without =
      train<dchag::TensorParallel>(tiny_config({1}), dchag::ProcessGrid::single(), 4, 2, b);
  CHECK(std::abs(with.losses[0] - without.losses[0]) > 1e-6 * std::abs(without.losses[0]));
  check_all_grids<dchag::TensorParallel>(cfg);
}

TEST_CASE("partition invariance with dropout and drop-path: D-CHAG-L") {
  auto cfg = dchag::climax_dropout(tiny_config({4, 1}));
  cfg.drop_rate = 0.25;
  check_all_grids<dchag::DistributedChannels<dchag::LinearAggregator>>(cfg);
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
  // Channels need not split evenly (test_uneven_split.cpp); heads must.
  auto odd = tiny_config({1});
  odd.channels = 7;
  odd.heads = 4 * world.size() + 1;
  odd.dim = 4 * odd.heads;
  const std::string heads_text = "heads = " + std::to_string(odd.heads);
  CHECK_THROWS_WITH_AS(Model(odd, grid), doctest::Contains(heads_text.c_str()), dchag::Error);
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

TEST_CASE("ranks that disagree on the output variables are told so, on every rank") {
  const dchag::Communicator world;
  if (world.size() < 2) return;
  using Baseline = dchag::ChannelViT<double, Space, dchag::TensorParallel>;
  auto cfg = named_subset(tiny_config({1}));
  if (world.rank() == 1) cfg.out_variables = {"t2m", "tp", "z500"};  // the same set, reordered
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  CHECK_THROWS_WITH_AS(Baseline(cfg, grid), doctest::Contains("differs"), dchag::Error);
  CHECK(dchag::all_reduce_sum(world, 1.0) == double(world.size()));
}
