// dchag::plan (train/plan.hpp) against the model it plans: on every grid the world can be cut
// into, the planned parameter list of each rank has the sizes of the real model's, the planned
// FLOPs are the model's, and a training step's Kokkos peak and communication are what
// MemoryTracker and CommStats measure. Bad definitions are refused as the model refuses them.
#include <cmath>
#include <string>
#include <vector>

#include <dchag/dchag.hpp>

#include "test_common.hpp"

namespace {

using Space = Kokkos::DefaultExecutionSpace;

struct Grid {
  int tp, fsdp, dp;
};

// Every dp x fsdp x tp = world size.
std::vector<Grid> all_grids(int world) {
  std::vector<Grid> out;
  for (int tp = 1; tp <= world; ++tp)
    for (int fsdp = 1; tp * fsdp <= world; ++fsdp)
      if (world % (tp * fsdp) == 0) out.push_back({tp, fsdp, world / (tp * fsdp)});
  return out;
}

dchag::ModelConfig config(int channels, std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = channels;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 2;
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 3;
  return c;
}

template <class Policy>
void check_parameters(const dchag::ModelConfig& cfg) {
  const dchag::Communicator world;
  for (const Grid& g : all_grids(world.size())) {
    CAPTURE(g.tp);
    CAPTURE(g.fsdp);
    CAPTURE(g.dp);
    CAPTURE(cfg.levels_string());
    dchag::ProcessGrid grid(world, g.tp, g.fsdp, g.dp);
    dchag::ChannelViT<float, Space, Policy> model(cfg, grid);
    const auto list = model.parameters();
    std::size_t elements = 0;
    for (const auto& p : list) elements += p.size();
    const dchag::StepPlan plan = dchag::plan<Policy, float>(cfg, dchag::GridShape::of(grid), 2);
    CHECK(plan.parameter_elements == elements);
    CHECK(plan.parameter_tensors == list.size());
    CHECK(plan.channel_begin == model.channel_begin());
    CHECK(plan.channel_count == model.channel_count());
    CHECK(plan.forward_flops == doctest::Approx(model.forward_flops(2)).epsilon(1e-12));
  }
}

// The input pixels and targets of one step: any finite values (their content does not change
// what is allocated or sent).
template <class V>
void fill(const V& v, double value) {
  Kokkos::deep_copy(v, typename V::value_type(value));
}

struct Measured {
  double peak_bytes = 0;  // Kokkos bytes live at once, over construction and two steps
  double sent_bytes = 0;  // CommStats payload of the second step
};

// The model, its trainer and one step's inputs on `grid`, two training steps.
template <class Policy>
Measured measure_step(const dchag::ModelConfig& cfg, const dchag::ProcessGrid& grid, int B) {
  Space space;
  space.fence();
  dchag::MemoryTracker::reset_peak();
  const double before = double(dchag::MemoryTracker::current_total_bytes());
  Measured m;
  {
    dchag::ChannelViT<float, Space, Policy> model(cfg, grid);
    dchag::TrainConfig tc;
    tc.steps = 100;
    dchag::ForecastTrainer<decltype(model)> trainer(model, tc);
    dchag::View4<float, Space> x("x", B, model.channel_count(), cfg.height, cfg.width);
    dchag::View4<float, Space> y("y", B, model.predicted_outputs().size(), cfg.height,
                                 cfg.width);
    dchag::View1<float, Space> lead("lead", B), lat("lat", cfg.height);
    fill(x, 0.5);
    fill(y, -0.25);
    fill(lead, 0.25);
    fill(lat, 1.0);
    trainer.step(space, x, y, lead, lat);  // allocates every buffer
    dchag::CommStats::reset();
    trainer.step(space, x, y, lead, lat);
    m.sent_bytes = double(dchag::CommStats::bytes());
    space.fence();
    m.peak_bytes = double(dchag::MemoryTracker::peak_total_bytes()) - before;
  }
  return m;
}

bool kokkos_scratch_allocated = false;

template <class Policy>
void check_step(const dchag::ModelConfig& cfg, int global_batch) {
  dchag::MemoryTracker::install();
  const dchag::Communicator world;
  for (const Grid& g : all_grids(world.size())) {
    CAPTURE(g.tp);
    CAPTURE(g.fsdp);
    CAPTURE(g.dp);
    CAPTURE(cfg.levels_string());
    dchag::ProcessGrid grid(world, g.tp, g.fsdp, g.dp);
    if (global_batch % grid.data_size() != 0) continue;
    const int B = global_batch / grid.data_size();
    // Kokkos keeps scratch of its own (about 11 KB on the Serial backend), allocated by the
    // first kernel that needs it: one unmeasured run allocates it first.
    if (!kokkos_scratch_allocated) measure_step<Policy>(cfg, grid, B);
    kokkos_scratch_allocated = true;
    const Measured m = measure_step<Policy>(cfg, grid, B);
    const dchag::StepPlan plan = dchag::plan<Policy, float>(cfg, dchag::GridShape::of(grid), B);
    CAPTURE(m.peak_bytes);
    CAPTURE(plan.peak_bytes);
    // Every allocation is in the plan; the slack is for a backend whose Kokkos allocates more
    // of its own (a missed [B*L, D] buffer would be 0.5% of this model).
    CHECK(plan.peak_bytes == doctest::Approx(m.peak_bytes).epsilon(0.002));
    CHECK(plan.comm_bytes() == doctest::Approx(m.sent_bytes).epsilon(1e-9));
  }
}

// The message of the dchag::Error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dchag::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("plan: every rank's parameter list has the sizes of the model's") {
  check_parameters<dchag::TensorParallel>(config(8, {1}));
  check_parameters<dchag::ReplicatedChannels<dchag::CrossAttentionAggregator>>(config(8, {4, 1}));
  check_parameters<dchag::DistributedChannels<dchag::LinearAggregator>>(config(8, {4, 1}));
  check_parameters<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(
      config(16, {8, 4, 1}));
  auto no_lead = config(8, {1});
  no_lead.lead_time = false;
  no_lead.decoder_depth = 2;
  no_lead.out_variables = {"var5", "var0", "var2"};  // a reordered subset: the head selects
  check_parameters<dchag::DistributedChannels<dchag::LinearAggregator>>(no_lead);
}

TEST_CASE("plan: a training step's Kokkos peak and communication are the measured ones") {
  auto cfg = config(16, {4, 1});
  cfg.height = 16;
  cfg.width = 32;
  cfg.dim = 32;
  check_step<dchag::TensorParallel>(config(16, {1}), 4);
  check_step<dchag::DistributedChannels<dchag::LinearAggregator>>(cfg, 4);
  check_step<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(cfg, 4);
  // Output variables a reordered subset: the selection's buffers.
  auto subset = config(16, {4, 1});
  subset.height = 16;
  subset.width = 32;
  subset.out_variables = {"var9", "var1", "var4"};
  check_step<dchag::DistributedChannels<dchag::LinearAggregator>>(subset, 4);
  // Uneven: 6 channels over 4 ranks (2, 2, 1, 1), 30 in groups of 6 ({5, 1}).
  auto uneven = config(6, {1});
  uneven.height = 16;
  uneven.width = 32;
  check_step<dchag::DistributedChannels<dchag::LinearAggregator>>(uneven, 4);
  auto groups = config(30, {5, 1});
  groups.height = 16;
  groups.width = 32;
  check_step<dchag::DistributedChannels<dchag::LinearAggregator>>(groups, 4);
}

TEST_CASE("plan: with model sharding overlapped, the peak holds the units in flight") {
  // Blocks much larger than the head, so that the overlapped encoder sets the peak: the units
  // gathered ahead and reduced behind are about 10% of it (measured), which the 0.2% check
  // resolves.
  auto cfg = config(4, {1});
  cfg.dim = 48;
  cfg.heads = 4;
  cfg.depth = 3;
  struct Overlap {
    Overlap() { dchag::set_fsdp_overlap(true); }
    ~Overlap() { dchag::set_fsdp_overlap(false); }
  } on;
  const dchag::GridShape two(1, 2, 1);
  CHECK(dchag::plan<dchag::TensorParallel>(cfg, two, 2).peak_bytes >
        dchag::plan<dchag::TensorParallel>(cfg, two, 2, false).peak_bytes);
  check_step<dchag::TensorParallel>(cfg, 4);
  check_step<dchag::DistributedChannels<dchag::LinearAggregator>>(cfg, 4);
}

TEST_CASE("plan: definitions and splits the model refuses are refused, with the model's error") {
  using DL = dchag::DistributedChannels<dchag::LinearAggregator>;
  // Channels that split unevenly are planned as the policy splits them (8 over tp = 3: 3, 3, 2;
  // no such grid needs to exist), heads that do not split are refused.
  auto three_heads = config(8, {1});
  three_heads.dim = 24;
  three_heads.heads = 3;
  for (int r = 0; r < 3; ++r) {
    const auto p = dchag::plan<DL>(three_heads, dchag::GridShape(3, 1, 1, r), 1);
    CHECK(p.channel_count == (r < 2 ? 3 : 2));
  }
  // Heads that do not split.
  const std::string heads =
      error_of([] { dchag::plan<dchag::TensorParallel>(config(8, {1}), dchag::GridShape(8), 1); });
  CHECK(heads.find("heads = 4 cannot be split evenly over tp = 8") != std::string::npos);
  // The definition itself: ModelConfig::validate's error.
  auto bad = config(8, {3, 1});
  CHECK(error_of([&] { dchag::plan<DL>(bad, dchag::GridShape(1), 1); }) ==
        error_of([&] { bad.validate(); }));
  CHECK(!error_of([&] { bad.validate(); }).empty());
  CHECK(!error_of([] { dchag::plan<DL>(config(8, {1}), dchag::GridShape(1), 0); }).empty());
  CHECK(!error_of([] { dchag::GridShape(2, 1, 1, 2); }).empty());

  // The same split on a live grid: the model's own message.
  const dchag::Communicator world;
  if (world.size() == 4) {
    dchag::ProcessGrid grid(world, 4, 1, 1);
    auto six_heads = config(8, {1});
    six_heads.dim = 24;
    six_heads.heads = 6;
    const std::string model_error = error_of(
        [&] { dchag::ChannelViT<float, Space, DL> model(six_heads, grid); });
    const std::string plan_error =
        error_of([&] { dchag::plan<DL>(six_heads, dchag::GridShape::of(grid), 1); });
    CHECK(!model_error.empty());
    CHECK(model_error.find(plan_error) != std::string::npos);
  }
}
