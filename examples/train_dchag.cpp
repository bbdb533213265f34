// The main job: trains a D-CHAG channel vision transformer on the built-in weather data
// (forecast t + Delta from t), reports loss, throughput and memory per step, and at the end
// scores the model on held-out data against persistence and climatology.
//
//   mpirun -np 2 train_dchag [--policy dchag|tp] [--tp 2] [--fsdp 1] [--dp 1]
//               [--channels 16] [--height 32] [--width 64] [--patch 4] [--dim 128] [--depth 2]
//               [--heads 4] [--mlp-ratio 4] [--groups 4 | --levels 8,2,1]
//               [--aggregator linear|cross|baseline] [--drop-rate 0] [--drop-path-rate 0]
//               [--steps 150] [--batch 8] [--lr 2e-3] [--seed 0] [--lead-steps 12]
//               [--run-dir runs/latest] [--csv FILE] [--save-every K] [--resume CHECKPOINT]
//               [--no-save] [--timeout-minutes M] [--init-from CHECKPOINT]
//               [--precision fp32|bf16]
//   train_dchag --eval CHECKPOINT [--batch 8] [--lead-steps 12]
//   mpirun -np 2 train_dchag --data DIR --variables v1,v2,... [--lead-hours 72]
//               [--train-years 1979-2015] [--validation-years 2016] [--test-years 2017]
//               [--statistics FILE] [other options as above]
//
// --data trains on a WeatherBench-layout netCDF data set instead of the built-in weather (see
// dchag/io/weatherbench.hpp): the channels are --variables (folder names, plus _LEVEL for a
// pressure level: geopotential_500,temperature_850,2m_temperature), --height and --width must
// be its grid, the lead is --lead-hours, the splits are by year (default: the last year Test,
// the one before Validation, the rest Train) and the per-variable statistics are cached in
// --statistics (default DIR/dchag_statistics.csv). Each rank reads its own input channels.
// --lead-steps is the forecast lead in steps of 6 h of the weather data (the model also sees it
// as its lead-time input); the checkpoint does not record it, so --eval of a model trained at
// another lead needs the same value.
//
// A run writes its per-step metrics (train_metrics.csv) and, at the end, its checkpoint
// (checkpoint.safetensors: weights under the ClimaX names, AdamW state, step, configuration)
// into --run-dir; --save-every K also writes checkpoint_step{K, 2K, ...}.safetensors. --resume
// continues a run from a checkpoint up to --steps in total (the schedule spans --steps, so pass
// the original run's value), with the same losses as the run that never stopped, and continues
// the run dir's train_metrics.csv from there. The checkpoint defines the model: a model flag
// given with --resume or --eval must agree with it. After training, and alone with --eval
// (a checkpoint saved on any grid), the job scores the forecast on held-out (Test) samples:
// latitude-weighted RMSE and ACC per output variable for the model, for persistence (x(t) as
// the forecast of x(t + Delta)) and for the climatology (the mean Train state), printed as a
// table and written to eval.csv in the run dir (with --eval only when --run-dir is given).
// --init-from starts a new run from the weights of a checkpoint of the same network on any grid
// and policy, also of another aggregation: a ClimaX checkpoint (levels {1}, converted by
// scripts/convert_climax_checkpoint.py) into D-CHAG, whose partial aggregators it initialises.
// The network (sizes, variables) is the checkpoint's; --groups / --levels / --aggregator, the
// seed and the training settings are this run's.
// A run never writes weights that are
// not finite: a diverged run stops with an error and leaves the last good checkpoint as it
// was. Temporaries that a killed run left in the run dir are removed at the next start.
// --timeout-minutes M ends the job with an error when no step completes for M minutes (a rank
// stopped or died and the others wait for it).
//
// --precision bf16 trains in mixed precision: weights, activations and gradients in bfloat16,
// every sum (GEMM, softmax, LayerNorm, reductions, collectives) in float, and AdamW on float
// master weights and moments; the checkpoint holds BF16 weights and F32 optimizer state. bf16
// keeps float's range, so no loss scaling is needed. A checkpoint records its precision: --resume
// and --eval take it from there; --init-from converts the weights to this run's precision.
//
// --policy dchag distributes the channels over the tensor-parallel ranks (D-CHAG); tp
// replicates them (the tensor-parallel baseline). --fsdp shards the parameters, gradients and
// optimizer state over that many ranks (ZeRO-3), which, like the --dp ranks, train on their own
// part of the batch. --tp defaults to all ranks / (fsdp x dp). --batch is the global batch, split
// over the fsdp x dp ranks. --groups G gives the two-level D-CHAG tree {G, 1};
// --levels takes any tree; --aggregator baseline is the ClimaX cross-attention over all
// channels (levels {1}). --mlp-ratio sets the MLP width int(dim * ratio) (a float, as in
// ClimaX). --drop-rate and --drop-path-rate turn on dropout and stochastic depth in training
// (ClimaX trains with 0.1 and 0.1; the default 0 keeps the network deterministic).
#include <dchag/dchag.hpp>
#include <mpi.h>

#include "data_source.hpp"
#include "example_main.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <vector>

namespace {

using Space = Kokkos::DefaultExecutionSpace;
constexpr const char* program = "train_dchag";

struct Options {
  dchag::ModelConfig model;
  dchag::TrainConfig train;
  int batch = 8;
  int tp = 0, fsdp = 1, dp = 1;
  int groups = -1;
  // 72 h (12 steps of 6 h), ClimaX's 3-day lead: at 24 h the state has changed so little that
  // persistence (RMSE 0.32 here) beats what 150 steps of training reach (0.43; 0.37 after 300
  // steps, 0.39 at lr 5e-3), whereas at 72 h the model beats it (0.59 against 0.67).
  int lead_steps = 12;
  std::vector<int> levels;
  std::string policy = "dchag";
  std::string aggregator = "linear";
  std::string precision = "fp32";  // fp32 | bf16
  std::string run_dir = "runs/latest";
  std::string csv;  // default: run_dir/train_metrics.csv
  std::string resume, eval, init_from;
  bool save = true;
  bool help = false;
  std::int64_t save_every = 0;
  double timeout_minutes = 0;
  std::set<std::string> given;  // the options on the command line
  dchag_example::DataOptions data;
};

// The command line alone (the same on every rank: the frame has checked that they agree).
Options parse(int argc, char* argv[]) {
  Options o;
  o.model.channels = 16;
  o.model.height = 32;
  o.model.width = 64;
  o.model.patch = 4;
  o.model.dim = 128;
  o.model.depth = 2;
  o.model.heads = 4;
  o.model.levels = {4, 1};
  o.train.steps = 150;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      dchag::Impl::require(i + 1 < argc, program, ": option ", a, " needs a value");
      return argv[++i];
    };
    if (dchag_example::parse_shared_option(program, a, value, o)) continue;
    if (dchag_example::parse_checkpoint_option(program, a, value, o)) continue;
    if (dchag_example::parse_data_option(program, a, value, o.data)) {
      o.given.insert(a);
      continue;
    }
    if (a == "--channels") {
      o.model.channels = dchag_example::parse_int(program, a, value(), 1);
    } else if (a == "--lead-steps") {
      o.lead_steps = dchag_example::parse_int(program, a, value(), 1);
    } else if (a == "--precision") {
      o.precision = value();
      dchag::Impl::require(o.precision == "fp32" || o.precision == "bf16", program,
                           ": --precision must be fp32 or bf16, got '", o.precision, "'");
    } else if (a == "--eval") {
      o.eval = value();
    } else if (a == "--init-from") {
      o.init_from = value();
    } else if (a == "--help" || a == "-h") {
      o.help = true;
    } else {
      throw dchag::Error(std::string(program) + ": unknown option '" + a + "' (--help lists them)");
    }
    o.given.insert(a);
  }
  dchag::Impl::require(o.resume.empty() || o.eval.empty(), program,
                       ": give --resume or --eval, not both");
  dchag::Impl::require(o.init_from.empty() || (o.resume.empty() && o.eval.empty()), program,
                       ": --init-from starts a new run: not with --resume or --eval");
  if (o.csv.empty()) o.csv = o.run_dir + "/train_metrics.csv";
  dchag_example::finish_data_options(program, o);
  dchag_example::finish_shared_options(program, o);
  return o;
}

// What needs more than the command line: the checkpoint's header, the derived settings.
void resolve(Options& o) {
  const std::string from = !o.eval.empty() ? o.eval : o.resume;
  if (!from.empty())
    dchag_example::adopt_checkpoint(
        program, o, from, dchag::ChannelViT<float, Space>::kind(), "--channels",
        [&](auto& conflicts, const dchag::CheckpointInfo& info) {
          // A resumed bf16 run continues on its float master weights, which an fp32 model has
          // no place for (and the converse): the checkpoint's precision is the run's.
          const std::string recorded = info.scalar == "BF16" ? "bf16" : "fp32";
          conflicts.check("--precision", o.precision, "precision", recorded);
          o.precision = recorded;
        });
  if (!o.init_from.empty()) {
    // The network is the checkpoint's, its aggregation this run's.
    const dchag::CheckpointInfo info = dchag::read_checkpoint_info(o.init_from);
    dchag::Impl::require(info.model == dchag::ChannelViT<float, Space>::kind(), program, ": ",
                         o.init_from, " is a checkpoint of a ", info.model, " model");
    dchag::Impl::require(!o.given.count("--channels") || o.model.channels == info.config.channels,
                         program, ": --channels ", o.model.channels, " but ", o.init_from,
                         " holds a model of ", info.config.channels, " channels");
    dchag::ModelConfig m = info.config;
    m.levels = o.model.levels;
    m.seed = o.model.seed;
    m.drop_rate = o.model.drop_rate;
    m.drop_path_rate = o.model.drop_path_rate;
    o.model = m;
  }
  o.train.warmup_steps =
      std::min<std::int64_t>(std::max<std::int64_t>(1, o.train.steps / 10), o.train.steps - 1);
  o.model.validate();
}

// ---- held-out evaluation against the two baselines a forecaster checks first ----------------

// Samples of the Test split scored per evaluation (rounded up to whole global batches), spread
// evenly over the split: consecutive times are strongly correlated, so a block of neighbours
// would measure one weather situation.
constexpr int kEvalSamples = 64;
// Training states the climatology averages, spread evenly over the Train split (all of them
// when the split is shorter). The synthetic split has 100000 times whose waves average out
// over a few hundred; a pass over every one of them would cost more than the training.
constexpr std::size_t kClimatologyStates = 1024;

struct Skill {
  std::vector<double> model_rmse, persistence_rmse, climatology_rmse;
  std::vector<double> model_acc, persistence_acc;
  double samples = 0, climatology_states = 0, lead_hours = 0;
  // The first held-out sample on world rank 0, [C, H, W] in the model's units, for the maps.
  std::vector<double> map_input, map_truth, map_forecast;
};

// Copies sample 0 of `v` ([B, C, H, W], first C channels) to the host, C-major.
template <class V>
std::vector<double> first_sample(const V& v, int channels) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  std::vector<double> out;
  out.reserve(std::size_t(channels) * h.extent(2) * h.extent(3));
  for (int c = 0; c < channels; ++c)
    for (std::size_t i = 0; i < h.extent(2); ++i)
      for (std::size_t j = 0; j < h.extent(3); ++j) out.push_back(double(h(0, c, i, j)));
  return out;
}

double mean_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x / double(v.size());
  return m;
}

// The climatology of the output variables: the mean Train state per grid point, in the units
// the model sees. The ranks share the states and sum their parts.
template <class T, class Data>
dchag::View3<T, Space> training_climatology(const dchag::Communicator& world, const Space& space,
                                            const Data& data, int channels, double& states) {
  const std::size_t n_train = data.size(dchag::Split::Train);
  const std::size_t n = std::min(n_train, kClimatologyStates);
  constexpr std::size_t chunk = 16;
  dchag::Climatology<Space> clim(channels, data.height(), data.width());
  dchag::View4<T, Space> buffer("climatology_states", chunk, channels, data.height(),
                                data.width());
  std::size_t filled = 0;
  auto flush = [&] {
    if (filled > 0)
      clim.add(space, Kokkos::subview(buffer, Kokkos::make_pair(std::size_t(0), filled),
                                      Kokkos::ALL, Kokkos::ALL, Kokkos::ALL));
    filled = 0;
  };
  for (std::size_t j = world.rank(); j < n; j += world.size()) {
    const std::size_t index = j * n_train / n;
    data.state(data.time_index(dchag::Split::Train, index),
               Kokkos::subview(buffer, filled, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL));
    if (++filled == chunk) flush();
  }
  flush();
  clim.all_reduce(space, world);
  states = clim.samples();
  return clim.template mean<T>(space);
}

// Every TP rank's values of its own channels (`each` values per channel), joined in channel
// order on every rank: the whole table when the model distributes its outputs (D-CHAG), the
// rank's own (already whole) values otherwise. Collective over the TP ranks.
template <class Model>
std::vector<double> join_channels(const Model& model, const std::vector<double>& mine,
                                  std::size_t each) {
  if (!model.distributes_outputs()) return mine;
  std::vector<std::size_t> counts;
  std::size_t total = 0;
  for (const auto& r : model.channel_ranges()) {
    counts.push_back(r.size() * each);
    total += counts.back();
  }
  using Host = Kokkos::DefaultHostExecutionSpace;
  Kokkos::View<double*, Kokkos::HostSpace> local("join.local", mine.size()),
      full("join.full", total);
  std::copy(mine.begin(), mine.end(), local.data());
  dchag::all_gatherv(Host(), model.grid().tp_comm(), local, full, counts);
  return std::vector<double>(full.data(), full.data() + total);
}

// RMSE and ACC of the model, of persistence (x(t + lead) = x(t): the input channels of the
// output variables) and of the climatology, on the same held-out samples. Every rank scores the
// variables it predicts (its own channels under D-CHAG, all of them otherwise) against its own
// targets, the parts are summed over the data ranks and the variables joined over TP.
// `diverged` turns a non-finite forecast of the model into the job's error.
template <class T, class Model, class Data, class Load, class Diverged>
Skill evaluate_skill(const dchag::Communicator& world, const dchag::ProcessGrid& grid,
                     const Space& space, Model& model, const Data& data, Load& load,
                     const dchag::View4<T, Space>& x, const dchag::View4<T, Space>& y,
                     const dchag::View1<T, Space>& lead, const dchag::View1<T, Space>& lat,
                     int batch, Diverged&& diverged) {
  // The outputs are the inputs (the job forecasts every variable), so this rank's outputs are
  // its channels, the persistence forecast is its input x and its targets y are those channels.
  const int C = model.config().channels, mine = model.channel_count();
  const auto own = Kokkos::make_pair(model.channel_begin(), model.channel_begin() + mine);
  Skill s;
  const dchag::View3<T, Space> clim_all =
      training_climatology<T>(world, space, data, C, s.climatology_states);
  const auto clim = Kokkos::subview(clim_all, own, Kokkos::ALL, Kokkos::ALL);
  dchag::View4<T, Space> clim_forecast;
  dchag::on_every_rank(world, [&] {
    clim_forecast = dchag::View4<T, Space>("climatology_forecast", y.extent(0), mine, y.extent(2),
                                           y.extent(3));
    dchag::climatology_forecast(space, clim_forecast, clim);
  });
  dchag::ForecastSkill model_skill(mine), persistence_skill(mine), climatology_skill(mine);

  const std::size_t n_test = data.size(dchag::Split::Test);
  const int batches = (kEvalSamples + batch - 1) / batch;
  const std::size_t n = std::size_t(batches) * batch;
  std::vector<std::size_t> indices(batch);
  for (int k = 0; k < batches; ++k) {
    for (int i = 0; i < batch; ++i) indices[i] = (std::size_t(k) * batch + i) * n_test / n;
    load(dchag::Split::Test, indices);
    auto pred = model.forward(space, x, lead);
    if (k == 0) {  // every TP rank joins the gather; world rank 0 keeps the maps
      const std::size_t pixels = y.extent(2) * y.extent(3);
      s.map_input = join_channels(model, first_sample(x, mine), pixels);
      s.map_truth = join_channels(model, first_sample(y, mine), pixels);
      s.map_forecast = join_channels(model, first_sample(pred, mine), pixels);
    }
    dchag::on_every_rank(world, [&] {
      try {
        model_skill.add(space, pred, y, clim, lat);
      } catch (const dchag::Error& e) {
        throw diverged(e);
      }
      persistence_skill.add(space, x, y, clim, lat);
      climatology_skill.add(space, clim_forecast, y, clim, lat);
    });
    dchag_example::watchdog().beat();
  }
  model_skill.all_reduce(grid.data_comm());
  persistence_skill.all_reduce(grid.data_comm());
  climatology_skill.all_reduce(grid.data_comm());
  s.model_rmse = join_channels(model, model_skill.rmse(), 1);
  s.persistence_rmse = join_channels(model, persistence_skill.rmse(), 1);
  s.climatology_rmse = join_channels(model, climatology_skill.rmse(), 1);
  s.model_acc = join_channels(model, model_skill.acc(), 1);
  s.persistence_acc = join_channels(model, persistence_skill.acc(), 1);
  s.samples = model_skill.samples();
  s.lead_hours = data.lead_steps(dchag::Split::Test, 0) * data.hours_per_step();
  return s;
}

// The table, per output variable: RMSE in the model's normalised units and, through the data
// set's per-channel standard deviation, in its raw units; ACC (the same in either unit).
template <class Data>
void print_skill(const Skill& s, const Data& data) {
  const std::vector<double>& sd = data.channel_std();
  std::printf("\nheld-out evaluation: %.0f Test samples, lead %.0f h; latitude-weighted RMSE "
              "(normalised units, and raw = normalised x std) and ACC against the climatology\n"
              "(the mean of %.0f Train states); the climatology's own ACC is 0 by definition (it "
              "has no anomaly)\n",
              s.samples, s.lead_hours, s.climatology_states);
  std::printf("  var   RMSE: model persist   clim |  ACC: model persist |      std  raw RMSE: "
              "model  persist     clim\n");
  for (std::size_t c = 0; c < s.model_rmse.size(); ++c)
    std::printf("  %3zu        %6.4f  %6.4f %6.4f |       %6.4f  %6.4f | %8.4g       %8.4g %8.4g "
                "%8.4g\n",
                c, s.model_rmse[c], s.persistence_rmse[c], s.climatology_rmse[c], s.model_acc[c],
                s.persistence_acc[c], sd[c], s.model_rmse[c] * sd[c],
                s.persistence_rmse[c] * sd[c], s.climatology_rmse[c] * sd[c]);
  std::printf("  mean        %6.4f  %6.4f %6.4f |       %6.4f  %6.4f |\n", mean_of(s.model_rmse),
              mean_of(s.persistence_rmse), mean_of(s.climatology_rmse), mean_of(s.model_acc),
              mean_of(s.persistence_acc));
  const double model = mean_of(s.model_rmse), persistence = mean_of(s.persistence_rmse);
  int wins = 0;
  for (std::size_t c = 0; c < s.model_rmse.size(); ++c)
    wins += s.model_rmse[c] < s.persistence_rmse[c];
  std::printf("held-out lat-weighted RMSE (normalised units), mean over %zu variables: %.4f "
              "(persistence %.4f, climatology %.4f): the model %s persistence (better on %d of "
              "%zu variables)\n",
              s.model_rmse.size(), model, persistence, mean_of(s.climatology_rmse),
              model < persistence ? "beats" : "does not beat", wins, s.model_rmse.size());
}

template <class Data>
bool write_skill_csv(const std::string& path, const Skill& s, const Data& data) {
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  std::ofstream out(path);
  if (!out) return false;
  const std::vector<double>& sd = data.channel_std();
  char line[512];
  out << "variable,samples,lead_hours,model_rmse,persistence_rmse,climatology_rmse,model_acc,"
         "persistence_acc,climatology_acc,std,model_rmse_raw,persistence_rmse_raw,"
         "climatology_rmse_raw\n";
  for (std::size_t c = 0; c < s.model_rmse.size(); ++c) {
    std::snprintf(line, sizeof line, "%zu,%.0f,%.0f,%.6g,%.6g,%.6g,%.6g,%.6g,0,%.6g,%.6g,%.6g,%.6g\n",
                  c, s.samples, s.lead_hours, s.model_rmse[c], s.persistence_rmse[c],
                  s.climatology_rmse[c], s.model_acc[c], s.persistence_acc[c], sd[c],
                  s.model_rmse[c] * sd[c], s.persistence_rmse[c] * sd[c],
                  s.climatology_rmse[c] * sd[c]);
    out << line;
  }
  // Raw units differ between variables, so the mean row has normalised scores only.
  std::snprintf(line, sizeof line, "mean,%.0f,%.0f,%.6g,%.6g,%.6g,%.6g,%.6g,0,,,,\n", s.samples,
                s.lead_hours, mean_of(s.model_rmse), mean_of(s.persistence_rmse),
                mean_of(s.climatology_rmse), mean_of(s.model_acc), mean_of(s.persistence_acc));
  out << line;
  out.close();
  return bool(out);
}

// The maps of the first held-out sample (input, truth, forecast) in raw units, with the grid's
// coordinates, for scripts/plot_run.py.
template <class Data>
void write_forecast_maps(const std::string& path, const Skill& s, const Data& data) {
  const std::size_t C = s.model_rmse.size(), H = data.height(), W = data.width();
  const std::vector<double>&mean = data.channel_mean(), &sd = data.channel_std();
  std::vector<double> input(s.map_input), truth(s.map_truth), forecast(s.map_forecast);
  for (auto* m : {&input, &truth, &forecast})
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t p = 0; p < H * W; ++p)
        (*m)[c * H * W + p] = (*m)[c * H * W + p] * sd[c] + mean[c];
  std::string names;
  for (std::size_t c = 0; c < C; ++c) names += (c ? "," : "") + std::to_string(c);
  dchag::write_safetensors<double>(
      path,
      {{"input", {C, H, W}, input.data()},
       {"truth", {C, H, W}, truth.data()},
       {"forecast", {C, H, W}, forecast.data()},
       {"latitudes", {H}, data.latitudes().data()},
       {"longitudes", {W}, data.longitudes().data()}},
      {{"variables", names},
       {"lead_hours", dchag::Impl::round_trip_text(s.lead_hours)},
       {"units", "raw"}});
}

template <class T, class Policy, class Data>
int run(const dchag::Communicator& world, const Options& o, const Data& data) {
  Space space;
  const dchag::ProcessGrid grid = dchag_example::make_grid(world, o);
  const bool root = world.rank() == 0;
  dchag::ModelConfig mc = o.model;
  const int local_batch = dchag_example::local_batch(program, grid, o.batch);

  // Named as the data names them (a checkpoint of other names is another model).
  mc.variables = data.variable_names();
  // The targets loaded below are every channel of the data, in order.
  dchag::Impl::require(mc.all_outputs(), program, ": the job forecasts every input variable");

  dchag::ChannelViT<T, Space, Policy> model(mc, grid);
  dchag::ForecastTrainer<decltype(model)> trainer(model, o.train);
  std::int64_t start = 0;
  const bool evaluate = !o.eval.empty();
  if (evaluate) {
    dchag::load_checkpoint(o.eval, model);
  } else if (!o.resume.empty()) {
    start = dchag::load_checkpoint(o.resume, model, &trainer.optimizer()).step;
    dchag::Impl::require(start <= o.train.steps, program, ": the checkpoint is at step ", start,
                         ", past --steps ", o.train.steps, " (pass the original run's --steps)");
    trainer.set_step_count(start);
    if (root) std::printf("resumed from %s at step %lld\n", o.resume.c_str(), (long long)start);
  } else if (!o.init_from.empty()) {
    dchag::init_from_checkpoint(o.init_from, model);
    if (root) std::printf("initialised from %s\n", o.init_from.c_str());
  }
  std::size_t nparams = 0;
  for (auto& p : trainer.parameters()) nparams += p.size();
  if (root) {
    std::fputs(dchag::blas_report().c_str(), stdout);
    std::printf("model: %s aggregator=%s precision=%s\n", mc.describe().c_str(),
                o.aggregator.c_str(), dchag::is_low_precision_v<T> ? "bf16 (float sums, float "
                "master weights and AdamW state)" : "fp32");
    std::printf("parallel: %s, grid %s; rank 0 holds %zu parameter values and reads channels "
                "[%d, %d)\n",
                Policy::name(), grid.describe().c_str(), nparams, model.channel_begin(),
                model.channel_begin() + model.channel_count());
    if (evaluate)
      std::printf("evaluating %s on held-out data\n", o.eval.c_str());
    else
      std::printf("training: steps=%lld global batch=%d lr=%g warmup=%lld lead=%g h on %s "
                  "(concurrency %d)\n",
                  (long long)o.train.steps, o.batch, o.train.lr, (long long)o.train.warmup_steps,
                  data.lead_steps(dchag::Split::Train, 0) * data.hours_per_step(), Space::name(),
                  dchag::Impl::concurrency(space));
  }

  // This rank reads only its own channels, of the inputs and of the targets: they are the
  // variables it predicts (all of them under the baseline, its share under D-CHAG). The largest
  // buffers of the run: allocated where every rank learns if one could not.
  dchag::Impl::require(model.predicted_outputs().size() == std::size_t(model.channel_count()),
                       program, ": rank predicts ", model.predicted_outputs().size(),
                       " variables but reads ", model.channel_count());
  dchag::View4<T, Space> x, y;
  dchag::View1<T, Space> lead;
  dchag::on_every_rank(world, [&] {
    x = dchag::View4<T, Space>("x", local_batch, model.channel_count(), mc.height, mc.width);
    y = dchag::View4<T, Space>("y", local_batch, model.channel_count(), mc.height, mc.width);
    lead = dchag::View1<T, Space>("lead_time", local_batch);
  });
  auto load = [&](dchag::Split split, const std::vector<std::size_t>& global) {
    const std::vector<std::size_t> mine(global.begin() + grid.data_rank() * local_batch,
                                        global.begin() + (grid.data_rank() + 1) * local_batch);
    data.fill(split, mine, x, y, lead, model.channel_begin());
  };
  auto lat = dchag::latitude_weights<T, Space>(data.latitudes());

  std::ofstream csv;
  if (!evaluate) dchag_example::prepare_run_dir(world, program, o.run_dir, csv, o.csv, start);
  // Consecutive time indices are strongly correlated: draw each batch's samples at random (from
  // the seed, so a rerun sees the same batches; every rank draws the same global batch).
  std::mt19937_64 pick(mc.seed);
  std::uniform_int_distribution<std::size_t> any(0, data.size(dchag::Split::Train) - 1);
  std::vector<std::size_t> indices(o.batch);
  std::vector<double> losses;
  double total = 0;
  for (std::int64_t s = 0; s < (evaluate ? 0 : o.train.steps); ++s) {
    for (auto& i : indices) i = any(pick);
    if (s < start) continue;  // batches the resumed run already trained on
    load(dchag::Split::Train, indices);
    const dchag::StepReport r = trainer.step(space, x, y, lead, lat);
    dchag_example::watchdog().beat();
    losses.push_back(r.loss);
    total += r.seconds;
    if (o.save_every > 0 && trainer.step_count() % o.save_every == 0 &&
        trainer.step_count() < o.train.steps)
      dchag::save_checkpoint(o.run_dir + "/checkpoint_step" + std::to_string(trainer.step_count()) +
                                 ".safetensors",
                             model, &trainer.optimizer(), trainer.step_count());
    dchag_example::log_step(world, program, "loss", s, o.train.steps, r, csv, o.csv);
  }

  // Held-out forecast skill on the Test split, before the checkpoint is written: weights that
  // are finite but have diverged (a rate far too large) forecast NaN, and must not replace the
  // last good checkpoint either.
  const std::string checkpoint = o.run_dir + "/checkpoint.safetensors";
  const Skill skill = evaluate_skill(world, grid, space, model, data, load, x, y, lead, lat,
                                     o.batch, [&](const dchag::Error& e) {
                                       return dchag::Error(dchag::Impl::concat(
                                           program,
                                           ": the model's forecast is not finite, the training "
                                           "diverged",
                                           evaluate || !o.save
                                               ? ""
                                               : "; it was not saved (" + checkpoint +
                                                     " is unchanged)",
                                           ": ", e.what()));
                                     });
  if (!evaluate && o.save)
    dchag::save_checkpoint(checkpoint, model, &trainer.optimizer(), trainer.step_count());
  dchag_example::watchdog().beat();

  // Collective: every rank's peak memory goes to rank 0, which prints it in the summary.
  const std::size_t n = losses.size(), k = std::min<std::size_t>(10, n);
  if (root && n > 0)
    std::printf("\nsummary: %lld steps in %.1f s (%.1f samples/s)\n", (long long)n, total,
                double(n) * o.batch / total);
  dchag_example::print_peak_memory(world);
  if (!root) return 0;
  if (n >= k && k > 0) {
    const double first = dchag_example::mean(losses, 0, k);
    const double last = dchag_example::mean(losses, n - k, n);
    std::printf("loss: first %zu steps %.5f, last %zu steps %.5f (ratio %.3f)\n", k, first, k,
                last, last / first);
  }
  print_skill(skill, data);
  // Training writes the table into its run dir; --eval only where --run-dir asks for it (many
  // evaluations of one run's checkpoints may run at once).
  if (!evaluate || o.given.count("--run-dir")) {
    const std::string path = o.run_dir + "/eval.csv";
    if (write_skill_csv(path, skill, data))
      std::printf("evaluation table written to %s\n", path.c_str());
    else
      std::printf("warning: cannot write %s\n", path.c_str());
    const std::string maps = o.run_dir + "/forecast_maps.safetensors";
    try {
      write_forecast_maps(maps, skill, data);
      std::printf("maps of one held-out forecast written to %s (scripts/plot_run.py %s draws "
                  "them)\n", maps.c_str(), o.run_dir.c_str());
    } catch (const dchag::Error& e) {
      std::printf("warning: %s\n", e.what());
    }
  }
  if (evaluate) return 0;
  std::printf("per-step metrics written to %s\n", o.csv.c_str());
  if (o.save) std::printf("checkpoint written to %s\n", checkpoint.c_str());
  return 0;
}

template <class T>
struct ScalarTag {
  using type = T;
};

// Calls run(ScalarTag<T>{}) for --precision fp32 | bf16.
template <class Run>
int with_precision(const std::string& precision, Run&& run) {
  if (precision == "bf16") return run(ScalarTag<dchag::bf16>{});
  return run(ScalarTag<float>{});
}

void print_usage() {
  std::printf(
      "usage: mpirun -np N train_dchag [options]   (the comment at the top of\n"
      "       examples/train_dchag.cpp says what each does)\n"
      "  grid:     --policy dchag|tp  --tp N  --fsdp N  --dp N\n"
      "  model:    --channels C  --height H  --width W  --patch P  --dim D  --depth N\n"
      "            --heads N  --mlp-ratio X  --groups G | --levels 8,2,1\n"
      "            --aggregator linear|cross|baseline  --drop-rate P  --drop-path-rate P\n"
      "  training: --steps N  --batch B  --lr X  --seed S  --lead-steps N  --timeout-minutes M\n"
      "            --precision fp32|bf16\n"
      "  files:    --run-dir DIR  --csv FILE  --save-every K  --no-save  --resume CHECKPOINT\n"
      "            --eval CHECKPOINT  --init-from CHECKPOINT\n"
      "  data:     --data DIR --variables v1,v2,...  --lead-hours H  --statistics FILE\n"
      "            --train-years A-B  --validation-years A-B  --test-years A-B\n");
}

}  // namespace

int main(int argc, char* argv[]) {
  return dchag_example::example_main(argc, argv, [&](const dchag::Communicator& world) {
    Options o = parse(argc, argv);
    if (o.help) {
      if (world.rank() == 0) print_usage();
      return 0;
    }
    dchag::on_every_rank(world, [&] { resolve(o); });
    dchag_example::watchdog().arm(o.timeout_minutes * 60, world.rank());
    return with_precision(o.precision, [&](auto precision) {
      using T = typename decltype(precision)::type;
      return dchag_example::with_policy(o.policy, o.aggregator, [&](auto policy) {
        return dchag_example::with_data<T>(program, world, o.data, o.model, o.lead_steps,
                                           [&](const auto& data) {
          return run<T, typename decltype(policy)::type>(world, o, data);
        });
      });
    });
  });
}
