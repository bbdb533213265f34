// Checkpoints move between topologies: a file written on the largest grid loads on one rank and
// on tp = 2 and computes the same function; training resumed from a checkpoint continues the
// uninterrupted run (bit for bit on the same grid, to 1e-10 in double on another); and every
// wrong checkpoint is refused on every rank with the model left as it was.
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/mae_trainer.hpp>
#include <dchag/train/schedule.hpp>
#include <dchag/train/trainer.hpp>

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "partition_check.hpp"

using namespace dchag_test;

namespace {

namespace fs = std::filesystem;
using Space = Kokkos::DefaultExecutionSpace;
using T = double;
using DchagL = dchag::DistributedChannels<dchag::LinearAggregator>;
using DchagC = dchag::DistributedChannels<dchag::CrossAttentionAggregator>;
using Baseline = dchag::TensorParallel;
using View4 = dchag::View4<T, Space>;
using View1 = dchag::View1<T, Space>;

template <class Policy>
dchag::ModelConfig config_for(std::uint64_t seed = 42) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 2;
  c.heads = 4;
  c.decoder_depth = 1;
  // Four groups of two channels: whole groups on every rank of tp = 1, 2 and 4.
  c.levels = std::is_same<Policy, Baseline>::value ? std::vector<int>{1} : std::vector<int>{4, 1};
  c.seed = seed;
  return c;
}

// One directory for the whole program, the same path on every rank (rank 0 makes it).
struct SharedDir {
  std::string path;
  bool owner = false;
  SharedDir() {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    owner = rank == 0;
    std::string made;
    if (owner) {
      std::string tmpl = (fs::temp_directory_path() / "dchag_test_checkpoint_XXXXXX").string();
      char* d = mkdtemp(&tmpl[0]);
      made = d ? std::string(d) : std::string();
    }
    int length = static_cast<int>(made.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
    made.resize(static_cast<std::size_t>(length));
    MPI_Bcast(&made[0], length, MPI_CHAR, 0, MPI_COMM_WORLD);
    path = made;
  }
  ~SharedDir() {
    std::error_code ec;
    if (owner && !path.empty()) fs::remove_all(path, ec);
  }
};

// Collective on the first call.
std::string in_dir(const std::string& name) {
  static SharedDir dir;
  REQUIRE(!dir.path.empty());
  return dir.path + "/" + name;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The global batch, identical on every rank.
struct Data {
  View4 x, y;
  View1 lead, w;
};

Data global_data(const dchag::ModelConfig& c, int batch) {
  Data d{View4("xg", batch, c.channels, c.height, c.width),
         View4("yg", batch, c.out_channels(), c.height, c.width), View1("leadg", batch),
         View1("w", c.height)};
  fill_random(d.x, 1);
  fill_random(d.y, 2);
  fill_random(d.lead, 3, 0.0, 1.0);
  fill_random(d.w, 4, 0.5, 1.5);
  return d;
}

// A rank's share: its data-parallel samples and its own input channels.
struct Local {
  View4 x, y;
  View1 lead;
};

template <class Model>
Local local_batch(const Model& model, const Data& d) {
  const auto& grid = model.grid();
  const int B = int(d.x.extent(0)) / grid.data_size(), b0 = grid.data_rank() * B;
  const auto rows = Kokkos::make_pair(b0, b0 + B);
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  const auto& c = model.config();
  Local l{View4("x", B, model.channel_count(), c.height, c.width),
          predicted_targets(model, d.y, rows), View1("lead", B)};
  Kokkos::deep_copy(l.x, Kokkos::subview(d.x, rows, chans, Kokkos::ALL, Kokkos::ALL));
  Kokkos::deep_copy(l.lead, Kokkos::subview(d.lead, rows));
  return l;
}

dchag::AdamWConfig adamw_config() {
  dchag::AdamWConfig a;
  a.lr = 5e-3;
  a.beta2 = 0.95;
  a.weight_decay = 1e-2;  // decay on, so that the decayed / not-decayed split matters
  return a;
}

// One training step as ForecastTrainer takes it, at the step's scheduled learning rate: the
// schedule position comes from the step index, which a resumed run takes from the checkpoint.
template <class Model>
double train_step(Model& model, dchag::AdamW<T, Space>& opt, dchag::GradientSync<T, Space>& sync,
                  const Local& b, const View1& w, std::int64_t step) {
  Space space;
  const auto params = model.parameters();
  dchag::zero_grad(space, params);
  const auto pred = model.forward(space, b.x, b.lead);
  View4 dpred("dpred", pred.extent(0), pred.extent(1), pred.extent(2), pred.extent(3));
  double loss = dchag::forecast_loss(space, model, pred, b.y, w, dpred);
  model.backward(space, dpred);
  const auto& grid = model.grid();
  sync.average(space, grid, params);
  if (grid.data_size() > 1) loss = dchag::all_reduce_sum(grid.data_comm(), loss) / grid.data_size();
  const double norm = dchag::global_grad_norm(space, grid, params);
  dchag::apply_grad_clip(space, params, 0.5, norm);
  const dchag::WarmupCosine schedule(5e-3, 2, 20, 1e-4, 1e-5);
  opt.step(space, params, schedule.lr(step));
  return loss;
}

// The prediction for the whole global batch (every rank runs every sample on its channels).
template <class Model>
std::vector<double> predict(Model& model, const Data& d) {
  Space space;
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  const auto& c = model.config();
  View4 x("x", d.x.extent(0), model.channel_count(), c.height, c.width);
  Kokkos::deep_copy(x, Kokkos::subview(d.x, Kokkos::ALL, chans, Kokkos::ALL, Kokkos::ALL));
  const auto h = to_host(model.gather_prediction(space, model.forward(space, x, d.lead)));
  return std::vector<double>(h.data(), h.data() + h.size());
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return worst;
}

// Every value this rank holds, by name (to prove that a refused load changed nothing).
template <class Model>
std::map<std::string, std::vector<double>> snapshot(const Model& model) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& p : model.parameters()) {
    const auto h = to_host(p.value);
    out[p.name].assign(h.data(), h.data() + h.size());
  }
  return out;
}

// Rank 0 rewrites checkpoint `from` into `to` through `edit` (on name -> values, shapes and
// metadata); the others wait.
struct Contents {
  std::vector<std::string> names;
  std::map<std::string, std::vector<double>> values;
  std::map<std::string, std::vector<std::size_t>> shapes;
  std::map<std::string, std::string> metadata;
};

template <class Edit>
void rewrite(const std::string& from, const std::string& to, Edit edit) {
  const dchag::Communicator world;
  if (world.rank() == 0) {
    const auto f = dchag::SafetensorsFile::read(from);
    Contents c;
    c.names = f.names();
    c.metadata = f.metadata();
    for (const auto& n : c.names) {
      c.values[n] = f.read<double>(n);
      c.shapes[n] = f.info(n).shape;
    }
    edit(c);
    std::vector<dchag::SafetensorsTensor<double>> tensors;
    for (const auto& n : c.names) tensors.push_back({n, c.shapes.at(n), c.values.at(n).data()});
    dchag::write_safetensors<double>(to, tensors, c.metadata);
  }
  world.barrier();
}

template <class Policy>
const char* policy_tag() {
  return std::is_same<Policy, DchagL>::value ? "dchag_l"
         : std::is_same<Policy, DchagC>::value ? "dchag_c" : "baseline";
}

struct GridSizes {
  int tp, fsdp, dp;
};

std::vector<GridSizes> save_grids(int world) {
  std::vector<GridSizes> grids = {{world, 1, 1}};  // the largest TP grid, all sharded ...
  if (world > 1) grids.push_back({1, world, 1});
  if (world == 4) {                                 // ... and the hybrid ones
    grids.push_back({2, 1, 2});
    grids.push_back({2, 2, 1});
  }
  return grids;
}

}  // namespace

TEST_CASE_TEMPLATE("a checkpoint written on the largest grid loads on one rank and on tp = 2",
                   Policy, DchagL, DchagC, Baseline) {
  using Model = dchag::ChannelViT<T, Space, Policy>;
  const dchag::Communicator world;
  const int P = world.size();
  const auto cfg = config_for<Policy>(), other_seed = config_for<Policy>(7);
  const Data data = global_data(cfg, 4);
  for (const auto& sizes : save_grids(P)) {
    // (not a structured binding: clang refuses to capture those in CAPTURE's lambda)
    const int tp = sizes.tp, fsdp = sizes.fsdp, dp = sizes.dp;
    CAPTURE(tp);
    CAPTURE(fsdp);
    CAPTURE(dp);
    const dchag::ProcessGrid grid(world, tp, fsdp, dp);
    Model saved(cfg, grid);
    dchag::AdamW<T, Space> opt(adamw_config());
    dchag::GradientSync<T, Space> sync;
    const Local local = local_batch(saved, data);
    // A few steps, so that no bias is still zero and nothing is at its initial value.
    for (int s = 0; s < 2; ++s) train_step(saved, opt, sync, local, data.w, s);
    const std::string path = in_dir(std::string("largest_") + policy_tag<Policy>() + "_tp" +
                                    std::to_string(tp) + "_fsdp" + std::to_string(fsdp) +
                                    "_dp" + std::to_string(dp) + ".safetensors");
    dchag::save_checkpoint(path, saved, &opt, 2);
    const std::vector<double> expect = predict(saved, data);

    {  // the same grid: the same bits
      Model m(other_seed, grid);
      CHECK(max_rel_diff(predict(m, data), expect) > 1e-6);  // a different model before loading
      const auto info = dchag::load_checkpoint(path, m);
      CHECK(info.step == 2);
      CHECK(info.has_optimizer);
      CHECK(predict(m, data) == expect);
    }
    {  // one rank (each rank on its own)
      Model m(other_seed, dchag::ProcessGrid::single());
      dchag::load_checkpoint(path, m);
      CHECK(max_rel_diff(predict(m, data), expect) < 1e-12);
    }
    if (P % 2 == 0) {  // tp = 2 (x dp = P / 2)
      Model m(other_seed, dchag::ProcessGrid(world, 2, 1, P / 2));
      dchag::load_checkpoint(path, m);
      CHECK(max_rel_diff(predict(m, data), expect) < 1e-12);
    }
  }
}

// 7 single channels (levels {1}) for D-CHAG-L, 30 channels in 5 groups for D-CHAG-C: on 2, 3
// and 4 ranks the groups do not split evenly (4 + 3, 3 + 2 + 2, ...). 12 heads split over all.
template <class Policy>
dchag::ModelConfig uneven_config_for(std::uint64_t seed) {
  auto c = config_for<Policy>(seed);
  const bool cross = std::is_same<Policy, DchagC>::value;
  c.channels = cross ? 30 : 7;
  c.levels = cross ? std::vector<int>{5, 1} : std::vector<int>{1};
  c.dim = 24;
  c.heads = 12;
  return c;
}

TEST_CASE_TEMPLATE("uneven split: a checkpoint saved at tp = 1 resumes where the channels split "
                   "unevenly, and back",
                   Policy, DchagL, DchagC) {
  using Model = dchag::ChannelViT<T, Space, Policy>;
  const dchag::Communicator world;
  const int P = world.size(), k = 2;
  const auto cfg = uneven_config_for<Policy>(42), other_seed = uneven_config_for<Policy>(9);
  const Data data = global_data(cfg, 12);
  const std::string tag = policy_tag<Policy>();
  // Saved at tp = 1 (data parallel over the world), half way through an uninterrupted run.
  const dchag::ProcessGrid flat(world, 1, 1, P);
  const std::string path = in_dir("uneven_tp1_" + tag + ".safetensors");
  Model a(cfg, flat);
  dchag::AdamW<T, Space> opt_a(adamw_config());
  dchag::GradientSync<T, Space> sync_a;
  const Local local_a = local_batch(a, data);
  std::vector<double> losses;
  for (int s = 0; s < 2 * k; ++s) {
    if (s == k) dchag::save_checkpoint(path, a, &opt_a, s);
    losses.push_back(train_step(a, opt_a, sync_a, local_a, data.w, s));
  }
  // Loaded at tp = P: the run continues (parameters and AdamW moments in place).
  const dchag::ProcessGrid wide(world, P, 1, 1);
  Model b(other_seed, wide);
  dchag::AdamW<T, Space> opt_b(adamw_config());
  dchag::GradientSync<T, Space> sync_b;
  const auto info = dchag::load_checkpoint(path, b, &opt_b);
  CHECK(info.step == k);
  const Local local_b = local_batch(b, data);
  for (int s = k; s < 2 * k; ++s) {
    CAPTURE(s);
    CHECK(train_step(b, opt_b, sync_b, local_b, data.w, s) ==
          doctest::Approx(losses[s]).epsilon(1e-10));
  }
  // Saved from the uneven grid, it loads on one rank and computes the same function.
  const std::string back = in_dir("uneven_tp" + std::to_string(P) + "_" + tag + ".safetensors");
  dchag::save_checkpoint(back, b, &opt_b, 2 * k);
  const std::vector<double> expect = predict(b, data);
  Model c(other_seed, dchag::ProcessGrid::single());
  CHECK(dchag::load_checkpoint(back, c).step == 2 * k);
  CHECK(max_rel_diff(predict(c, data), expect) < 1e-12);
}

TEST_CASE("a checkpoint file does not depend on the grid that wrote it") {
  using Model = dchag::ChannelViT<T, Space, DchagL>;
  const dchag::Communicator world;
  const auto cfg = config_for<DchagL>();
  // Initial values depend only on (seed, logical position): the files must be byte-identical.
  Model parallel(cfg, dchag::ProcessGrid(world, world.size(), 1, 1));
  const std::string wide = in_dir("grid_wide.safetensors");
  dchag::save_checkpoint(wide, parallel, 0);
  Model single(cfg, dchag::ProcessGrid::single());
  Model sharded(cfg, dchag::ProcessGrid(world, 1, world.size(), 1));
  const std::string slices = in_dir("grid_sharded.safetensors");
  dchag::save_checkpoint(slices, sharded, 0);
  if (world.rank() == 0) {
    CHECK(slurp(slices) == slurp(wide));
    const std::string narrow = in_dir("grid_single.safetensors");
    dchag::save_checkpoint(narrow, single, 0);
    const std::string a = slurp(wide), b = slurp(narrow);
    CHECK(a.size() > 0);
    CHECK(a == b);
  }
  // Logical names and shapes: exactly the single-rank model's parameters, in natural order.
  const auto file = dchag::SafetensorsFile::read(wide);
  std::map<std::string, std::vector<std::size_t>> expect;
  for (const auto& p : single.parameters()) expect[p.name] = p.shape;
  REQUIRE(file.size() == expect.size());
  for (const auto& t : file.tensors()) {
    CAPTURE(t.name);
    REQUIRE(expect.count(t.name) == 1);
    CHECK(t.shape == expect.at(t.name));
    CHECK(t.dtype == "F64");
  }
  const auto names = file.names();
  CHECK(std::is_sorted(names.begin(), names.end(), dchag::Impl::natural_less));
  CHECK(dchag::Impl::natural_less("blocks.2.mlp.fc1.weight", "blocks.10.mlp.fc1.weight"));
  CHECK(dchag::Impl::natural_less("token_embeds.7.proj.bias", "token_embeds.10.proj.bias"));
  const auto info = dchag::read_checkpoint_info(wide);
  CHECK(info.config.describe() == cfg.describe());
  CHECK(info.config.seed == cfg.seed);
  CHECK(info.aggregator == "linear");
  CHECK(info.scalar == "F64");
  CHECK(!info.has_optimizer);
}

TEST_CASE("a checkpoint records a float mlp_ratio and the dropout rates; older integer ratios "
          "still read") {
  using Model = dchag::ChannelViT<T, Space, DchagL>;
  const dchag::Communicator world;
  auto cfg = config_for<DchagL>();
  cfg.mlp_ratio = 2.5;  // hidden 40: splits over tp = 1, 2 and 4
  cfg.drop_rate = 0.1;
  cfg.drop_path_rate = 0.2;
  Model model(cfg, dchag::ProcessGrid(world, world.size(), 1, 1));
  const std::string path = in_dir("float_ratio.safetensors");
  dchag::save_checkpoint(path, model, 0);
  const auto info = dchag::read_checkpoint_info(path);
  CHECK(info.config.mlp_ratio == 2.5);
  CHECK(info.config.drop_rate == 0.1);
  CHECK(info.config.drop_path_rate == 0.2);
  CHECK(info.metadata.at("config.mlp_ratio") == "2.5");
  // Dropout is a training setting: a model without it loads the file.
  auto plain = cfg;
  plain.drop_rate = plain.drop_path_rate = 0;
  Model other(plain, dchag::ProcessGrid(world, world.size(), 1, 1));
  dchag::load_checkpoint(path, other);

  // A file of an older version: mlp_ratio "4", no dropout fields; or "4.0" from Python.
  auto meta = info.metadata;
  meta.erase("config.drop_rate");
  meta.erase("config.drop_path_rate");
  for (const char* text : {"4", "4.0"}) {
    meta["config.mlp_ratio"] = text;
    const auto old = dchag::Impl::config_from_metadata(meta, "old.safetensors");
    CHECK(old.mlp_ratio == 4.0);
    CHECK(old.drop_rate == 0);
    CHECK(old.drop_path_rate == 0);
    auto four = cfg;
    four.mlp_ratio = 4;
    CHECK_NOTHROW(dchag::Impl::check_checkpoint_config(meta, "old.safetensors", "channel_vit",
                                                       four, {}, "linear"));
  }
  meta["config.mlp_ratio"] = "four";
  CHECK_THROWS_WITH_AS(dchag::Impl::config_from_metadata(meta, "bad.safetensors"),
                       doctest::Contains("'config.mlp_ratio' is 'four', not a number"),
                       dchag::Error);
}

TEST_CASE("a checkpoint records the variables' names; files without them read as the defaults") {
  using Model = dchag::ChannelViT<T, Space, DchagL>;
  const dchag::Communicator world;
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  auto cfg = config_for<DchagL>();
  cfg.variables = {"z500", "t850", "t2m", "u10", "v10", "q700", "r850", "tp"};
  cfg.out_variables = {"tp", "z500", "u10"};
  Model model(cfg, grid);
  const std::string path = in_dir("named.safetensors");
  dchag::save_checkpoint(path, model, 0);
  const auto info = dchag::read_checkpoint_info(path);
  CHECK(info.config.variables == cfg.variables);
  CHECK(info.config.out_variables == cfg.out_variables);
  CHECK(info.config.describe() == cfg.describe());
  CHECK(info.metadata.at("config.variables") == "z500,t850,t2m,u10,v10,q700,r850,tp");
  CHECK(info.metadata.at("config.out_variables") == "tp,z500,u10");
  CHECK(info.metadata.at("config.out_channels") == "3");
  CHECK(info.metadata.at("config") == cfg.describe());
  // The head predicts every variable, as ClimaX's: its last Linear has C * p^2 = 8 * 16 outputs.
  CHECK(dchag::SafetensorsFile::read(path).info("head.2.weight").shape ==
        std::vector<std::size_t>{128, 16});
  {  // the definition it records, of another seed, loads it
    auto reseeded = info.config;
    reseeded.seed = 5;
    Model same(reseeded, grid);
    dchag::load_checkpoint(path, same);
    CHECK(snapshot(same) == snapshot(model));
  }
  // Another naming, or another selection, is another model.
  auto renamed = cfg;
  renamed.variables[5] = "q850";
  renamed.out_variables = {"tp", "z500", "u10"};
  Model m1(renamed, grid);
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(path, m1),
                       doctest::Contains("variables = z500,t850,t2m,u10,v10,q700,r850,tp in the "
                                         "file, z500,t850,t2m,u10,v10,q850,r850,tp in the model"),
                       dchag::Error);
  auto reordered = cfg;
  reordered.out_variables = {"z500", "tp", "u10"};
  Model m2(reordered, grid);
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(path, m2),
                       doctest::Contains("out_variables = tp,z500,u10 in the file, "
                                         "z500,tp,u10 in the model"),
                       dchag::Error);

  // Default names are stored and read back as the defaults.
  const auto plain_cfg = config_for<DchagL>();
  Model plain(plain_cfg, grid);
  const std::string plain_path = in_dir("unnamed.safetensors");
  dchag::save_checkpoint(plain_path, plain, 0);
  const auto plain_info = dchag::read_checkpoint_info(plain_path);
  CHECK(plain_info.config.variables.empty());
  CHECK(plain_info.config.out_variables.empty());
  CHECK(plain_info.metadata.at("config.variables") == "var0,var1,var2,var3,var4,var5,var6,var7");
  // A file of a version before names: it loads into a model of unnamed variables.
  const std::string old = in_dir("before_names.safetensors");
  rewrite(plain_path, old, [](Contents& c) {
    c.metadata.erase("config.variables");
    c.metadata.erase("config.out_variables");
  });
  CHECK(dchag::read_checkpoint_info(old).config.describe() == plain_cfg.describe());
  Model fresh(config_for<DchagL>(7), grid);
  dchag::load_checkpoint(old, fresh);
  CHECK(snapshot(fresh) == snapshot(plain));
  // ... but not one whose head predicted fewer variables than it read.
  auto meta = dchag::read_checkpoint_info(old).metadata;
  meta["config.out_channels"] = "3";
  CHECK_THROWS_WITH_AS(dchag::Impl::config_from_metadata(meta, "old.safetensors"),
                       doctest::Contains("'config.out_channels' = 3 with channels = 8 and no "
                                         "'config.out_variables'"),
                       dchag::Error);
  // Names that disagree with the count, or name a variable twice, are not a valid model.
  meta = plain_info.metadata;
  meta["config.out_variables"] = "var1,var9";
  meta["config.out_channels"] = "2";
  CHECK_THROWS_WITH_AS(dchag::Impl::config_from_metadata(meta, "bad.safetensors").validate(),
                       doctest::Contains("output variable 'var9' is not an input variable"),
                       dchag::Error);
  meta["config.out_channels"] = "3";
  CHECK_THROWS_WITH_AS(dchag::Impl::config_from_metadata(meta, "bad.safetensors"),
                       doctest::Contains("'config.out_channels' = 3 but 'config.out_variables' "
                                         "names 2 variables"),
                       dchag::Error);
}

// Every tensor of a checkpoint, by name (rank 0 reads it; the others get an empty map).
std::map<std::string, std::vector<double>> file_tensors(const std::string& path) {
  std::map<std::string, std::vector<double>> out;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);  // (not collective: only rank 0 may call)
  if (rank != 0) return out;
  const auto f = dchag::SafetensorsFile::read(path);
  for (const auto& n : f.names()) out[n] = f.read<double>(n);
  return out;
}

TEST_CASE_TEMPLATE("a ClimaX-aggregation checkpoint initialises a D-CHAG model of any grid",
                   Policy, DchagL, DchagC) {
  const dchag::Communicator world;
  auto climax = config_for<Baseline>(3);  // levels {1}
  climax.variables = {"z500", "t850", "t2m", "u10", "v10", "q700", "r850", "tp"};
  climax.out_variables = {"t2m", "z500"};
  const std::string from = in_dir(std::string("climax_for_") + policy_tag<Policy>() +
                                  ".safetensors");
  {
    dchag::ChannelViT<T, Space, Baseline> base(climax, dchag::ProcessGrid(world, world.size(), 1,
                                                                          1));
    dchag::save_checkpoint(from, base, 0);
  }
  auto dchag_cfg = climax;
  dchag_cfg.levels = {4, 1};
  dchag_cfg.seed = 8;
  using Model = dchag::ChannelViT<T, Space, Policy>;
  const std::string fresh_path = in_dir(std::string("fresh_") + policy_tag<Policy>() +
                                        ".safetensors");
  {
    Model fresh(dchag_cfg, dchag::ProcessGrid(world, world.size(), 1, 1));
    dchag::save_checkpoint(fresh_path, fresh, 0);
  }
  const auto file = file_tensors(from), fresh = file_tensors(fresh_path);
  for (const auto& sizes : save_grids(world.size())) {
    const int tp = sizes.tp, fsdp = sizes.fsdp, dp = sizes.dp;
    CAPTURE(tp);
    CAPTURE(fsdp);
    CAPTURE(dp);
    Model model(dchag_cfg, dchag::ProcessGrid(world, tp, fsdp, dp));
    // The strict load refuses the other aggregation; the initialisation takes it.
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(from, model), doctest::Contains("levels = 1"),
                         dchag::Error);
    dchag::init_from_checkpoint(from, model);
    const std::string out = in_dir(std::string("initialised_") + policy_tag<Policy>() +
                                   ".safetensors");
    dchag::save_checkpoint(out, model, 0);
    if (world.rank() == 0) {
      int loaded = 0, initialised = 0;
      for (const auto& entry : file_tensors(out)) {
        // Named copies, not structured bindings: CAPTURE's lambda cannot capture those (C++17).
        const std::string& name = entry.first;
        const auto& values = entry.second;
        CAPTURE(name);
        if (name.rfind("agg.", 0) == 0) {
          CHECK(file.count(name) == 0);
          CHECK(values == fresh.at(name));  // as the model initialised it
          ++initialised;
        } else {
          CHECK(values == file.at(name));  // from the file
          ++loaded;
        }
      }
      CHECK(loaded == int(file.size()));
      CHECK(initialised > 0);
    }
  }
  // The rest of the definition must match: another width, or other names, is another model.
  auto wider = dchag_cfg;
  wider.dim = 32;
  Model w(wider, dchag::ProcessGrid(world, world.size(), 1, 1));
  CHECK_THROWS_WITH_AS(dchag::init_from_checkpoint(from, w), doctest::Contains("dim = 16"),
                       dchag::Error);
  auto unnamed = dchag_cfg;
  unnamed.variables.clear();
  unnamed.out_variables = {"var2", "var0"};
  Model u(unnamed, dchag::ProcessGrid(world, world.size(), 1, 1));
  CHECK_THROWS_WITH_AS(dchag::init_from_checkpoint(from, u),
                       doctest::Contains("variables = z500,t850"), dchag::Error);
  // A D-CHAG file into the ClimaX aggregation: its partial aggregators have no place there.
  dchag::ChannelViT<T, Space, Baseline> back(climax, dchag::ProcessGrid(world, world.size(), 1, 1));
  CHECK_THROWS_WITH_AS(dchag::init_from_checkpoint(fresh_path, back),
                       doctest::Contains("tensor(s) the model does not have: 'agg.0.0."),
                       dchag::Error);
}

TEST_CASE_TEMPLATE("training resumed from a checkpoint continues the uninterrupted run", Policy,
                   DchagL, DchagC) {
  using Model = dchag::ChannelViT<T, Space, Policy>;
  const dchag::Communicator world;
  const int P = world.size(), k = 3;
  const auto cfg = config_for<Policy>(), other_seed = config_for<Policy>(9);
  const Data data = global_data(cfg, 4);
  for (const auto& sizes : save_grids(P)) {
    // (not a structured binding: clang refuses to capture those in CAPTURE's lambda)
    const int tp = sizes.tp, fsdp = sizes.fsdp, dp = sizes.dp;
    CAPTURE(tp);
    CAPTURE(fsdp);
    CAPTURE(dp);
    const dchag::ProcessGrid grid(world, tp, fsdp, dp);
    const std::string path = in_dir(std::string("resume_") + policy_tag<Policy>() + "_tp" +
                                    std::to_string(tp) + "_fsdp" + std::to_string(fsdp) +
                                    "_dp" + std::to_string(dp) + ".safetensors");
    // The uninterrupted run, saving half way.
    Model a(cfg, grid);
    dchag::AdamW<T, Space> opt_a(adamw_config());
    dchag::GradientSync<T, Space> sync_a;
    const Local local_a = local_batch(a, data);
    std::vector<double> losses;
    for (int s = 0; s < 2 * k; ++s) {
      if (s == k) dchag::save_checkpoint(path, a, &opt_a, s);
      losses.push_back(train_step(a, opt_a, sync_a, local_a, data.w, s));
    }

    {  // the same grid: a fresh model and optimizer continue bit for bit
      Model b(other_seed, grid);
      dchag::AdamW<T, Space> opt_b(adamw_config());
      dchag::GradientSync<T, Space> sync_b;
      const auto info = dchag::load_checkpoint(path, b, &opt_b);
      CHECK(info.step == k);
      CHECK(opt_b.step_count() == k);
      const Local local_b = local_batch(b, data);
      for (int s = k; s < 2 * k; ++s) {
        CAPTURE(s);
        CHECK(train_step(b, opt_b, sync_b, local_b, data.w, info.step + (s - k)) == losses[s]);
      }
      CHECK(snapshot(b) == snapshot(a));
    }

    // Other grids: one rank, and tp = 2, continue to 1e-10.
    auto continue_on = [&](const dchag::ProcessGrid& g) {
      Model c(other_seed, g);
      dchag::AdamW<T, Space> opt_c(adamw_config());
      dchag::GradientSync<T, Space> sync_c;
      const auto info = dchag::load_checkpoint(path, c, &opt_c);
      const Local local_c = local_batch(c, data);
      for (int s = k; s < 2 * k; ++s) {
        CAPTURE(s);
        const double loss = train_step(c, opt_c, sync_c, local_c, data.w, info.step + (s - k));
        CHECK(loss == doctest::Approx(losses[s]).epsilon(1e-10));
      }
    };
    continue_on(dchag::ProcessGrid::single());
    if (P % 2 == 0 && tp != 2) continue_on(dchag::ProcessGrid(world, 2, 1, P / 2));
    if (P > 1 && fsdp == 1) continue_on(dchag::ProcessGrid(world, 1, P, 1));
  }
}

TEST_CASE("a masked autoencoder resumed from a checkpoint continues the uninterrupted run") {
  using Model = dchag::ChannelMAE<T, Space, DchagL>;
  const dchag::Communicator world;
  const int P = world.size(), k = 2;
  auto cfg = config_for<DchagL>(11);
  cfg.lead_time = false;
  dchag::MaeConfig mc;
  mc.decoder_dim = 8;
  mc.decoder_depth = 1;
  mc.decoder_heads = 4;  // split over tp = 4 too
  mc.decoder_mlp_ratio = 2;
  dchag::TrainConfig tc;
  tc.steps = 2 * k;
  tc.lr = 5e-3;
  tc.warmup_steps = 1;
  const Data data = global_data(cfg, 4);
  // Steps through MaeTrainer on this rank's samples and channels (its input is its target).
  auto run = [&](Model& m, dchag::MaeTrainer<Model>& trainer, int from, int to,
                 std::vector<double>& losses) {
    Space space;
    const auto& grid = m.grid();
    const int B = int(data.x.extent(0)) / grid.data_size(), b0 = grid.data_rank() * B;
    const auto rows = Kokkos::make_pair(b0, b0 + B);
    const auto chans = Kokkos::make_pair(m.channel_begin(), m.channel_begin() + m.channel_count());
    View4 x("x", B, m.channel_count(), cfg.height, cfg.width);
    Kokkos::deep_copy(x, Kokkos::subview(data.x, rows, chans, Kokkos::ALL, Kokkos::ALL));
    for (int s = from; s < to; ++s) losses.push_back(trainer.step(space, x).loss);
  };
  for (const auto& sizes : save_grids(P)) {
    const int tp = sizes.tp, fsdp = sizes.fsdp, dp = sizes.dp;
    CAPTURE(tp);
    CAPTURE(fsdp);
    CAPTURE(dp);
    const dchag::ProcessGrid grid(world, tp, fsdp, dp);
    const std::string path = in_dir("mae_resume_tp" + std::to_string(tp) + "_fsdp" +
                                    std::to_string(fsdp) + "_dp" + std::to_string(dp) +
                                    ".safetensors");
    Model a(cfg, mc, grid);
    dchag::MaeTrainer<Model> trainer_a(a, tc);
    std::vector<double> losses;
    run(a, trainer_a, 0, k, losses);
    dchag::save_checkpoint(path, a, &trainer_a.optimizer(), trainer_a.step_count());
    run(a, trainer_a, k, 2 * k, losses);

    // The masks are drawn from the seed: the resumed model is built from what the file records.
    auto continue_on = [&](const dchag::ProcessGrid& g, bool exact) {
      const auto info = dchag::read_checkpoint_info(path);
      REQUIRE(info.model == "channel_mae");
      Model b(info.config, info.mae, g);
      dchag::MaeTrainer<Model> trainer_b(b, tc);
      trainer_b.set_step_count(dchag::load_checkpoint(path, b, &trainer_b.optimizer()).step);
      std::vector<double> resumed(losses.begin(), losses.begin() + k);
      run(b, trainer_b, k, 2 * k, resumed);
      for (int s = k; s < 2 * k; ++s) {
        CAPTURE(s);
        if (exact)
          CHECK(resumed[s] == losses[s]);
        else
          CHECK(resumed[s] == doctest::Approx(losses[s]).epsilon(1e-10));
      }
    };
    continue_on(grid, true);
    continue_on(dchag::ProcessGrid::single(), false);
  }
}

TEST_CASE("a checkpoint of one policy loads into another with the same parameters") {
  const dchag::Communicator world;
  const auto cfg = config_for<DchagL>();
  const Data data = global_data(cfg, 4);
  dchag::ChannelViT<T, Space, DchagL> saved(cfg, dchag::ProcessGrid(world, world.size(), 1, 1));
  dchag::AdamW<T, Space> opt(adamw_config());
  dchag::GradientSync<T, Space> sync;
  train_step(saved, opt, sync, local_batch(saved, data), data.w, 0);
  const std::string path = in_dir("policy.safetensors");
  dchag::save_checkpoint(path, saved, 1);
  const auto expect = predict(saved, data);
  // Channels replicated on the TP ranks, the same linear partial aggregators.
  const int tp = world.size() % 2 == 0 ? 2 : 1;
  dchag::ChannelViT<T, Space, dchag::ReplicatedChannels<dchag::LinearAggregator>> other(
      config_for<DchagL>(5), dchag::ProcessGrid(world, tp, 1, world.size() / tp));
  dchag::load_checkpoint(path, other);
  CHECK(max_rel_diff(predict(other, data), expect) < 1e-12);
}

TEST_CASE("wrong checkpoints are refused on every rank and leave the model untouched") {
  using Model = dchag::ChannelViT<T, Space, DchagL>;
  const dchag::Communicator world;
  const int P = world.size();
  const auto cfg = config_for<DchagL>();
  const dchag::ProcessGrid grid(world, P, 1, 1);
  const Data data = global_data(cfg, 4);

  // A trained model with optimizer state, saved with and without the optimizer.
  Model saved(cfg, grid);
  dchag::AdamW<T, Space> opt(adamw_config());
  dchag::GradientSync<T, Space> sync;
  train_step(saved, opt, sync, local_batch(saved, data), data.w, 0);
  const std::string good = in_dir("good.safetensors"), model_only = in_dir("model_only.safetensors");
  dchag::save_checkpoint(good, saved, &opt, 1);
  dchag::save_checkpoint(model_only, saved, 1);

  Model target(config_for<DchagL>(3), grid);
  const auto before = snapshot(target);
  dchag::AdamW<T, Space> target_opt(adamw_config());
  auto refused = [&](const std::string& path, const std::string& fragment, bool with_opt = false) {
    CAPTURE(path);
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(path, target, with_opt ? &target_opt : nullptr),
                         doctest::Contains(fragment.c_str()), dchag::Error);
    CHECK(snapshot(target) == before);
    CHECK(!target_opt.has_state());
    CHECK(target_opt.step_count() == 0);
  };

  SUBCASE("a different configuration") {
    auto wide = cfg;
    wide.dim = 32;
    Model other(wide, grid);
    const auto other_before = snapshot(other);
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(good, other),
                         doctest::Contains("dim = 16 in the file, 32 in the model"), dchag::Error);
    CHECK(snapshot(other) == other_before);
  }
  SUBCASE("a different partial aggregator") {
    dchag::ChannelViT<T, Space, DchagC> other(cfg, grid);
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(good, other),
                         doctest::Contains("aggregator = linear in the file, cross_attention in the model"),
                         dchag::Error);
  }
  SUBCASE("a missing tensor") {
    const std::string path = in_dir("missing.safetensors");
    rewrite(good, path, [](Contents& c) {
      c.names.erase(std::find(c.names.begin(), c.names.end(), "blocks.1.mlp.fc2.bias"));
    });
    refused(path, "parameter 'blocks.1.mlp.fc2.bias' is missing from the checkpoint");
    refused(path, "missing.safetensors");
  }
  SUBCASE("a tensor only one rank needs is missing: that rank's message on every rank") {
    const std::string path = in_dir("missing_channel.safetensors");
    rewrite(good, path, [](Contents& c) {
      c.names.erase(std::find(c.names.begin(), c.names.end(), "token_embeds.7.proj.weight"));
    });
    refused(path, "parameter 'token_embeds.7.proj.weight' is missing");
    if (P > 1) refused(path, "[rank " + std::to_string(P - 1) + " of " + std::to_string(P) + "]");
  }
  SUBCASE("an extra tensor") {
    const std::string path = in_dir("extra.safetensors");
    rewrite(good, path, [](Contents& c) {
      c.names.push_back("blocks.9.attn.qkv.weight");
      c.shapes["blocks.9.attn.qkv.weight"] = {48, 16};
      c.values["blocks.9.attn.qkv.weight"].assign(48 * 16, 0.5);
    });
    refused(path, "the model does not have: 'blocks.9.attn.qkv.weight'");
  }
  SUBCASE("a shape that disagrees") {
    const std::string path = in_dir("reshaped.safetensors");
    rewrite(good, path, [](Contents& c) { c.shapes["var_query"] = {1, 16}; });
    refused(path, "tensor 'var_query' has shape [1, 16] in the checkpoint but [1, 1, 16] in the "
                  "model");
  }
  SUBCASE("a file only one rank cannot open") {
    const std::string path = world.rank() == P - 1 ? in_dir("nowhere.safetensors") : good;
    refused(path, "cannot open");
  }
  SUBCASE("a truncated file") {
    const std::string path = in_dir("truncated.safetensors");
    if (world.rank() == 0) {
      const std::string bytes = slurp(good);
      std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() - 12));
    }
    world.barrier();
    refused(path, "run past the end of the data");
  }
  SUBCASE("not a dchag checkpoint") {
    const std::string path = in_dir("plain.safetensors");
    rewrite(good, path, [](Contents& c) { c.metadata.clear(); });
    refused(path, "no 'format' in the metadata");
  }
  SUBCASE("optimizer state asked of a checkpoint without it") {
    refused(model_only, "holds no optimizer state", true);
  }
  SUBCASE("a missing optimizer moment") {
    const std::string path = in_dir("no_moment.safetensors");
    rewrite(good, path, [](Contents& c) {
      c.names.erase(std::find(c.names.begin(), c.names.end(), "optimizer.v.norm.bias"));
    });
    refused(path, "optimizer moment 'optimizer.v.norm.bias' is missing", true);
    // Without an optimizer, the moments are not looked at.
    dchag::load_checkpoint(path, target);
    CHECK(predict(target, data) == predict(saved, data));
  }
  SUBCASE("saving with an optimizer that has no state") {
    const std::string path = in_dir("never.safetensors");
    CHECK_THROWS_WITH_AS(dchag::save_checkpoint(path, saved, &target_opt, 0),
                         doctest::Contains("the optimizer has no state yet"), dchag::Error);
    CHECK_THROWS_WITH_AS(dchag::save_checkpoint(path, saved, &target_opt, 0),
                         doctest::Contains("never.safetensors"), dchag::Error);
    CHECK(!fs::exists(path));
  }
  SUBCASE("a value that is not finite (a diverged run)") {
    const std::string path = in_dir("nan.safetensors");
    rewrite(good, path, [](Contents& c) { c.values["blocks.1.mlp.fc2.weight"][3] = std::nan(""); });
    refused(path, "tensor 'blocks.1.mlp.fc2.weight' holds a value that is not finite");
    const std::string moment = in_dir("inf_moment.safetensors");
    rewrite(good, moment, [](Contents& c) {
      c.values["optimizer.v.var_query"][0] = std::numeric_limits<double>::infinity();
    });
    refused(moment, "'optimizer.v.var_query' holds a value that is not finite", true);
    // Asked for explicitly, such a file loads (to inspect a diverged run).
    dchag::load_checkpoint(path, target, nullptr, dchag::NonFinite::Allow);
    CHECK(snapshot(target) != before);
  }
  SUBCASE("a flipped data byte fails the checksum") {
    const std::string path = in_dir("flipped.safetensors");
    if (world.rank() == 0) {
      std::string bytes = slurp(good);
      bytes[bytes.size() - 100] ^= 0x01;
      std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    }
    world.barrier();
    refused(path, "fails its checksum", true);
  }
  SUBCASE("weights that are not finite are not saved, and the old file stays") {
    const std::string path = in_dir("kept.safetensors");
    dchag::save_checkpoint(path, saved, &opt, 1);
    const std::string bytes = world.rank() == 0 ? slurp(path) : std::string();
    Model diverged(cfg, grid);
    const auto p = diverged.parameters()[0];
    Kokkos::deep_copy(p.value, std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH_AS(dchag::save_checkpoint(path, diverged, 2),
                         doctest::Contains("holds NaN or infinite values"), dchag::Error);
    if (world.rank() == 0) {
      CHECK(slurp(path) == bytes);
      for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
        CHECK(e.path().string().find("kept.safetensors.tmp") == std::string::npos);
    }
    dchag::save_checkpoint(in_dir("allowed.safetensors"), diverged, 2, dchag::NonFinite::Allow);
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(in_dir("allowed.safetensors"), target),
                         doctest::Contains("not finite"), dchag::Error);
  }
  // Nobody is left inside a collective.
  CHECK(dchag::all_reduce_sum(world, 1.0) == double(P));
}

TEST_CASE("float models write F32 files, and checkpoints convert between float and double") {
  using ModelF = dchag::ChannelViT<float, Space, DchagL>;
  using ModelD = dchag::ChannelViT<double, Space, DchagL>;
  const dchag::Communicator world;
  const auto cfg = config_for<DchagL>();
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  ModelF f(cfg, grid);
  const std::string path = in_dir("float.safetensors");
  dchag::save_checkpoint(path, f, 0);
  // Named: a range-for over read(path).tensors() would iterate a destroyed temporary.
  const auto written = dchag::SafetensorsFile::read(path);
  for (const auto& t : written.tensors()) CHECK(t.dtype == "F32");
  CHECK(dchag::read_checkpoint_info(path).scalar == "F32");

  // A double model takes the F32 file: exactly the float values, widened.
  ModelD d(config_for<DchagL>(8), dchag::ProcessGrid::single());
  dchag::load_checkpoint(path, d);
  CHECK(snapshot(d) == snapshot(ModelF(cfg, dchag::ProcessGrid::single())));
  // And an F64 file narrows back into a float model (any grid) to the same floats.
  const std::string wide = in_dir("float_widened.safetensors");
  if (world.rank() == 0) dchag::save_checkpoint(wide, d, 0);
  world.barrier();
  CHECK(dchag::read_checkpoint_info(wide).scalar == "F64");
  ModelF g(config_for<DchagL>(8), grid);
  dchag::load_checkpoint(wide, g);
  CHECK(snapshot(g) == snapshot(f));
}
