// The main job: trains a D-CHAG channel vision transformer on the built-in weather data
// (forecast t + Delta from t) and reports loss, throughput and memory per step.
//
//   mpirun -np 2 train_dchag [--policy dchag|tp] [--tp 2] [--fsdp 1] [--dp 1]
//               [--channels 16] [--height 32] [--width 64] [--patch 4] [--dim 128] [--depth 2]
//               [--heads 4] [--mlp-ratio 4] [--groups 4 | --levels 8,2,1]
//               [--aggregator linear|cross|baseline] [--drop-rate 0] [--drop-path-rate 0]
//               [--steps 150] [--batch 8] [--lr 2e-3] [--seed 0]
//               [--run-dir runs/latest] [--csv FILE] [--save-every K] [--resume CHECKPOINT]
//               [--no-save] [--timeout-minutes M]
//   train_dchag --eval CHECKPOINT [--batch 8]
//
// A run writes its per-step metrics (train_metrics.csv) and, at the end, its checkpoint
// (checkpoint.safetensors: weights under the ClimaX names, AdamW state, step, configuration)
// into --run-dir; --save-every K also writes checkpoint_step{K, 2K, ...}.safetensors. --resume
// continues a run from a checkpoint up to --steps in total (the schedule spans --steps, so pass
// the original run's value), with the same losses as the run that never stopped, and continues
// the run dir's train_metrics.csv from there. The checkpoint defines the model: a model flag
// given with --resume or --eval must agree with it. --eval loads a checkpoint (saved on any
// grid) and reports the forecast RMSE on held-out data. A run never writes weights that are
// not finite: a diverged run stops with an error and leaves the last good checkpoint as it
// was. Temporaries that a killed run left in the run dir are removed at the next start.
// --timeout-minutes M ends the job with an error when no step completes for M minutes (a rank
// stopped or died and the others wait for it).
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
using T = float;
constexpr const char* program = "train_dchag";

struct Options {
  dchag::ModelConfig model;
  dchag::TrainConfig train;
  int batch = 8;
  int tp = 0, fsdp = 1, dp = 1;
  int groups = -1;
  std::vector<int> levels;
  std::string policy = "dchag";
  std::string aggregator = "linear";
  std::string run_dir = "runs/latest";
  std::string csv;  // default: run_dir/train_metrics.csv
  std::string resume, eval;
  bool save = true;
  bool help = false;
  std::int64_t save_every = 0;
  double timeout_minutes = 0;
  std::set<std::string> given;  // the options on the command line
};

// The command line alone (the same on every rank: the frame has checked that they agree).
Options parse(int argc, char* argv[]) {
  Options o;
  o.model.channels = o.model.out_channels = 16;
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
    if (a == "--channels") {
      o.model.channels = o.model.out_channels = dchag_example::parse_int(program, a, value(), 1);
    } else if (a == "--eval") {
      o.eval = value();
    } else if (a == "--help" || a == "-h") {
      o.help = true;
    } else {
      throw dchag::Error(std::string(program) + ": unknown option '" + a + "' (--help lists them)");
    }
    o.given.insert(a);
  }
  dchag::Impl::require(o.resume.empty() || o.eval.empty(), program,
                       ": give --resume or --eval, not both");
  if (o.csv.empty()) o.csv = o.run_dir + "/train_metrics.csv";
  dchag_example::finish_shared_options(program, o);
  return o;
}

// What needs more than the command line: the checkpoint's header, the derived settings.
void resolve(Options& o) {
  const std::string from = !o.eval.empty() ? o.eval : o.resume;
  if (!from.empty())
    dchag_example::adopt_checkpoint(program, o, from, dchag::ChannelViT<T, Space>::kind(),
                                    "--channels", [](auto&, const auto&) {});
  o.train.warmup_steps =
      std::min<std::int64_t>(std::max<std::int64_t>(1, o.train.steps / 10), o.train.steps - 1);
  o.model.validate();
}

template <class Policy>
int run(const dchag::Communicator& world, const Options& o) {
  Space space;
  const dchag::ProcessGrid grid = dchag_example::make_grid(world, o);
  const bool root = world.rank() == 0;
  const dchag::ModelConfig& mc = o.model;
  const int local_batch = dchag_example::local_batch(program, grid, o.batch);

  dchag::WeatherConfig wc;
  wc.channels = mc.channels;
  wc.height = mc.height;
  wc.width = mc.width;
  wc.seed = mc.seed + 1;
  dchag::WeatherGenerator<T> data(wc);

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
  }
  std::size_t nparams = 0;
  for (auto& p : trainer.parameters()) nparams += p.size();
  if (root) {
    std::fputs(dchag::blas_report().c_str(), stdout);
    std::printf("model: %s aggregator=%s\n", mc.describe().c_str(), o.aggregator.c_str());
    std::printf("parallel: %s, grid %s; rank 0 holds %zu parameter values and reads channels "
                "[%d, %d)\n",
                Policy::name(), grid.describe().c_str(), nparams, model.channel_begin(),
                model.channel_begin() + model.channel_count());
    if (evaluate)
      std::printf("evaluating %s on held-out data\n", o.eval.c_str());
    else
      std::printf("training: steps=%lld global batch=%d lr=%g warmup=%lld on %s (concurrency %d)\n",
                  (long long)o.train.steps, o.batch, o.train.lr, (long long)o.train.warmup_steps,
                  Space::name(), dchag::Impl::concurrency(space));
  }

  // This rank's inputs are only its own channels; its targets are every output channel. The
  // largest buffers of the run: allocated where every rank learns if one could not.
  dchag::View4<T, Space> x, y, x_all, y_own;
  dchag::View1<T, Space> lead;
  dchag::on_every_rank(world, [&] {
    x = dchag::View4<T, Space>("x", local_batch, model.channel_count(), mc.height, mc.width);
    y = dchag::View4<T, Space>("y", local_batch, mc.out_channels, mc.height, mc.width);
    x_all = dchag::View4<T, Space>("x_all", local_batch, mc.channels, mc.height, mc.width);
    y_own = dchag::View4<T, Space>("y_own", local_batch, model.channel_count(), mc.height,
                                   mc.width);
    lead = dchag::View1<T, Space>("lead_time", local_batch);
  });
  auto load = [&](dchag::Split split, const std::vector<std::size_t>& global) {
    const std::vector<std::size_t> mine(global.begin() + grid.data_rank() * local_batch,
                                        global.begin() + (grid.data_rank() + 1) * local_batch);
    data.fill(split, mine, x, y_own, lead, model.channel_begin());
    data.fill(split, mine, x_all, y, lead, 0);
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
  std::vector<std::size_t> test(o.batch);
  for (std::size_t i = 0; i < test.size(); ++i) test[i] = i;
  load(dchag::Split::Test, test);
  auto pred = model.forward(space, x, lead);
  std::vector<double> rmse;
  dchag::on_every_rank(world, [&] {
    try {
      rmse = dchag::lat_weighted_rmse(space, pred, y, lat);
    } catch (const dchag::Error& e) {
      throw dchag::Error(dchag::Impl::concat(
          program, ": the model's forecast is not finite, the training diverged",
          evaluate || !o.save ? "" : "; it was not saved (" + checkpoint + " is unchanged)",
          ": ", e.what()));
    }
  });
  for (auto& v : rmse) v = dchag::all_reduce_sum(grid.data_comm(), v) / grid.data_size();
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
  double mean_rmse = 0;
  for (double v : rmse) mean_rmse += v / rmse.size();
  std::printf("held-out lat-weighted RMSE (normalised units), mean over %zu variables: %.4f\n",
              rmse.size(), mean_rmse);
  if (evaluate) return 0;
  std::printf("per-step metrics written to %s\n", o.csv.c_str());
  if (o.save) std::printf("checkpoint written to %s\n", checkpoint.c_str());
  return 0;
}

void print_usage() {
  std::printf(
      "usage: mpirun -np N train_dchag [options]   (the comment at the top of\n"
      "       examples/train_dchag.cpp says what each does)\n"
      "  grid:     --policy dchag|tp  --tp N  --fsdp N  --dp N\n"
      "  model:    --channels C  --height H  --width W  --patch P  --dim D  --depth N\n"
      "            --heads N  --mlp-ratio X  --groups G | --levels 8,2,1\n"
      "            --aggregator linear|cross|baseline  --drop-rate P  --drop-path-rate P\n"
      "  training: --steps N  --batch B  --lr X  --seed S  --timeout-minutes M\n"
      "  files:    --run-dir DIR  --csv FILE  --save-every K  --no-save  --resume CHECKPOINT\n"
      "            --eval CHECKPOINT\n");
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
    return dchag_example::with_policy(o.policy, o.aggregator, [&](auto policy) {
      return run<typename decltype(policy)::type>(world, o);
    });
  });
}
