// Channels that do not split evenly over the tensor-parallel ranks (any C on any tp, any tree
// whose levels divide the channels): D-CHAG spreads whole groups as evenly as they go, and the
// forward, the loss, the gradients and a few AdamW steps are the single-rank run's, for the
// forecasting model and the masked autoencoder. ctest also runs these cases at 3 ranks.
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/mae_trainer.hpp>

#include <string>
#include <vector>

#include "forecast_invariance.hpp"
#include "partition_check.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

using DchagL = dchag::DistributedChannels<dchag::LinearAggregator>;
using DchagC = dchag::DistributedChannels<dchag::CrossAttentionAggregator>;

// 12 heads and an MLP of 96 split over 1, 2, 3 and 4 ranks; the channels need not.
dchag::ModelConfig uneven_config(int channels, std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = channels;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 24;
  c.depth = 2;
  c.heads = 12;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 17;
  return c;
}

// Grids of this world: all of it tensor parallel (the uneven split), and on 4 ranks tp = 2 with
// sharding or data parallelism (7 and 13 channels split unevenly over 2 as well). The global
// batch of 12 splits over every data-parallel size.
std::vector<std::vector<int>> uneven_grids() {
  const int world = dchag::Communicator().size();
  std::vector<std::vector<int>> grids = {{world, 1, 1}};
  if (world == 4) {
    grids.push_back({2, 2, 1});
    grids.push_back({2, 1, 2});
  }
  return grids;
}

template <class Policy>
void check_uneven(const dchag::ModelConfig& cfg) {
  CAPTURE(cfg.describe());
  const int global_batch = 12, steps = 3;
  std::vector<dchag::Parameter<double, Space>> ref_params;
  const Run ref = train<Policy>(cfg, dchag::ProcessGrid::single(), global_batch, steps, ref_params);
  for (const auto& g : uneven_grids()) {
    const dchag::ProcessGrid grid(dchag::Communicator(), g[0], g[1], g[2]);
    std::vector<dchag::Parameter<double, Space>> par_params;
    const Run par = train<Policy>(cfg, grid, global_batch, steps, par_params);
    check_partition_invariance(ref, ref_params, par, par_params, grid);
  }
}

// The channels every TP rank reads, in rank order, as [begin, end) pairs.
template <class Policy>
std::vector<int> owned_on(const dchag::ModelConfig& cfg, const dchag::ProcessGrid& grid) {
  dchag::ChannelViT<double, Space, Policy> model(cfg, grid);
  std::vector<int> all(2 * std::size_t(grid.tp()), 0);
  const int mine[2] = {model.channel_begin(), model.channel_begin() + model.channel_count()};
  MPI_Allgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, grid.tp_comm().get());
  return all;
}

}  // namespace

TEST_CASE("uneven split: balanced_range gives the first n % parts parts one item more") {
  std::vector<std::size_t> sizes;
  std::size_t next = 0;
  for (int i = 0; i < 4; ++i) {
    const auto r = dchag::balanced_range(7, 4, i);
    CHECK(r.begin == next);
    next = r.end;
    sizes.push_back(r.size());
  }
  CHECK(next == 7u);
  CHECK(sizes == std::vector<std::size_t>{2, 2, 2, 1});
  CHECK(dchag::balanced_range(12, 4, 3).begin == 9u);  // even: even_range's parts
  CHECK(dchag::balanced_range(2, 4, 3).size() == 0u);  // fewer items than parts
  CHECK_THROWS_WITH_AS(dchag::balanced_range(7, 0, 0), doctest::Contains("parts = 0"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::balanced_range(7, 4, 4), doctest::Contains("[0, 4)"),
                       dchag::Error);
}

TEST_CASE("uneven split: D-CHAG gives each rank whole groups, as evenly as they go") {
  const dchag::Communicator world;
  const int p = world.size();
  const dchag::ProcessGrid grid(world, p, 1, 1);
  // 7 single channels (levels {1}): 7; 4, 3; 3, 2, 2; 2, 2, 2, 1.
  const std::vector<std::vector<int>> seven = {
      {0, 7}, {0, 4, 4, 7}, {0, 3, 3, 5, 5, 7}, {0, 2, 2, 4, 4, 6, 6, 7}};
  CHECK(owned_on<DchagL>(uneven_config(7, {1}), grid) == seven[p - 1]);
  // 30 channels in 5 groups of 6: groups 5; 3, 2; 2, 2, 1; 2, 1, 1, 1.
  const std::vector<std::vector<int>> five = {
      {0, 30}, {0, 18, 18, 30}, {0, 12, 12, 24, 24, 30}, {0, 12, 12, 18, 18, 24, 24, 30}};
  CHECK(owned_on<DchagC>(uneven_config(30, {5, 1}), grid) == five[p - 1]);
  // 30 channels, {6, 3, 1}: 3 keys of 10 channels; on 4 ranks fewer keys than ranks, so every
  // rank owns every channel (as ReplicatedChannels) and no per-channel parameter is
  // partitioned.
  const auto tree = uneven_config(30, {6, 3, 1});
  const std::vector<std::vector<int>> three = {
      {0, 30}, {0, 20, 20, 30}, {0, 10, 10, 20, 20, 30}, {0, 30, 0, 30, 0, 30, 0, 30}};
  CHECK(owned_on<DchagL>(tree, grid) == three[p - 1]);
  if (p == 4) {
    dchag::ChannelViT<double, Space, DchagL> model(tree, grid);
    int per_channel = 0;
    for (const auto& prm : model.parameters()) {
      const auto& n = prm.name;
      if (n.rfind("token_embeds.", 0) != 0 && n != "var_embed" && n.rfind("agg.", 0) != 0)
        continue;  // the final aggregator and the encoder are split over heads as always
      CAPTURE(n);
      CHECK_FALSE(prm.partitioned);
      ++per_channel;
    }
    CHECK(per_channel == 30 * 2 + 1 + 2 * (6 + 3));  // embeddings, var_embed, agg.{0,1}.*
  }
}

TEST_CASE("uneven split: D-CHAG-L over raw channel tokens, C = 7 and 13 (levels {1})") {
  check_uneven<DchagL>(uneven_config(7, {1}));
  check_uneven<DchagL>(uneven_config(13, {1}));
}

TEST_CASE("uneven split: D-CHAG-C with 30 channels in 5 groups (levels {5, 1})") {
  check_uneven<DchagC>(uneven_config(30, {5, 1}));
}

TEST_CASE("uneven split: D-CHAG-L with 30 channels in 10 groups (levels {10, 1})") {
  check_uneven<DchagL>(uneven_config(30, {10, 1}));
}

TEST_CASE("uneven split: D-CHAG-C with a three-level tree on 30 channels (levels {6, 3, 1})") {
  check_uneven<DchagC>(uneven_config(30, {6, 3, 1}));
}

TEST_CASE("uneven split: the tensor-parallel baseline with 7 channels") {
  // Channels replicated; only the heads and the MLP are split (evenly: 12 heads, 96 hidden).
  check_uneven<dchag::TensorParallel>(uneven_config(7, {1}));
}

TEST_CASE("uneven split: a tree whose levels do not divide the channels is still refused") {
  const dchag::Communicator world;
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  using Model = dchag::ChannelViT<double, Space, DchagL>;
  CHECK_THROWS_WITH_AS(Model(uneven_config(7, {2, 1}), grid),
                       doctest::Contains("reduces 7 tokens to 2"), dchag::Error);
  CHECK_THROWS_WITH_AS(Model(uneven_config(30, {6, 4, 1}), grid),
                       doctest::Contains("reduces 6 tokens to 4"), dchag::Error);
  CHECK(dchag::all_reduce_sum(world, 1.0) == double(world.size()));
}

namespace {

template <class Policy>
Run train_mae(const dchag::ProcessGrid& grid, std::vector<dchag::Parameter<double, Space>>& keep) {
  using T = double;
  Space space;
  const auto cfg = uneven_config(13, {1});
  dchag::MaeConfig mc;
  mc.decoder_dim = 24;
  mc.decoder_depth = 1;
  mc.decoder_heads = 12;
  dchag::ChannelMAE<T, Space, Policy> model(cfg, mc, grid);
  dchag::TrainConfig tc;
  tc.steps = 20;
  tc.lr = 5e-3;
  tc.warmup_steps = 1;
  tc.max_grad_norm = 0.5;
  dchag::MaeTrainer<decltype(model)> trainer(model, tc);
  const int global_batch = 12;
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

}  // namespace

TEST_CASE("uneven split: the masked autoencoder with 13 channels") {
  std::vector<dchag::Parameter<double, Space>> ref_params;
  const Run ref = train_mae<DchagL>(dchag::ProcessGrid::single(), ref_params);
  for (const auto& g : uneven_grids()) {
    const dchag::ProcessGrid grid(dchag::Communicator(), g[0], g[1], g[2]);
    std::vector<dchag::Parameter<double, Space>> par_params;
    const Run par = train_mae<DchagL>(grid, par_params);
    check_partition_invariance(ref, ref_params, par, par_params, grid);
  }
}
