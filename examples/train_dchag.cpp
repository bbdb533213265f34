// The main job: trains a D-CHAG channel vision transformer on the built-in weather data
// (forecast t + Delta from t) and reports loss, throughput and memory per step.
//
//   mpirun -np 2 train_dchag [--policy dchag|tp] [--tp 2] [--fsdp 1] [--dp 1]
//               [--channels 16] [--height 32] [--width 64] [--patch 4] [--dim 128] [--depth 2]
//               [--heads 4] [--groups 4 | --levels 8,2,1] [--aggregator linear|cross|baseline]
//               [--steps 150] [--batch 8] [--lr 2e-3] [--seed 0]
//               [--run-dir runs/latest] [--csv FILE] [--save-every K] [--resume CHECKPOINT]
//               [--no-save]
//   train_dchag --eval CHECKPOINT [--batch 8]
//
// A run writes its per-step metrics (train_metrics.csv) and, at the end, its checkpoint
// (checkpoint.safetensors: weights under the ClimaX names, AdamW state, step, configuration)
// into --run-dir; --save-every K also writes checkpoint_step{K, 2K, ...}.safetensors. --resume
// continues a run from a checkpoint up to --steps in total (the schedule spans --steps, so pass
// the original run's value), with the same losses as the run that never stopped. --eval loads a checkpoint (saved on any grid) and
// reports the forecast RMSE on held-out data.
//
// --policy dchag distributes the channels over the tensor-parallel ranks (D-CHAG); tp
// replicates them (the tensor-parallel baseline). --fsdp shards the parameters, gradients and
// optimizer state over that many ranks (ZeRO-3), which, like the --dp ranks, train on their own
// part of the batch. --tp defaults to all ranks / (fsdp x dp). --batch is the global batch, split
// over the fsdp x dp ranks. --groups G gives the two-level D-CHAG tree {G, 1};
// --levels takes any tree; --aggregator baseline is the ClimaX cross-attention over all
// channels (levels {1}).
#include <dchag/dchag.hpp>
#include <mpi.h>

#include "example_main.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;

struct Options {
  dchag::ModelConfig model;
  dchag::TrainConfig train;
  int batch = 8;
  int tp = 0, fsdp = 1, dp = 1;
  int groups = -1;
  std::string levels;
  std::string policy = "dchag";
  std::string aggregator = "linear";
  std::string run_dir = "runs/latest";
  std::string csv;  // default: run_dir/train_metrics.csv
  std::string resume, eval;
  bool save = true;
  std::int64_t save_every = 0;
};

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
      dchag::Impl::require(i + 1 < argc, "train_dchag: option ", a, " needs a value");
      return argv[++i];
    };
    if (dchag_example::parse_shared_option(a, value, o)) continue;
    if (a == "--channels") o.model.channels = o.model.out_channels = std::stoi(value());
    else if (a == "--run-dir") o.run_dir = value();
    else if (a == "--resume") o.resume = value();
    else if (a == "--eval") o.eval = value();
    else if (a == "--no-save") o.save = false;
    else if (a == "--save-every") o.save_every = std::stoll(value());
    else if (a == "--help" || a == "-h") {
      std::printf("see the comment at the top of examples/train_dchag.cpp\n");
      std::exit(0);
    } else {
      throw dchag::Error("train_dchag: unknown option '" + a + "'");
    }
  }
  if (o.csv.empty()) o.csv = o.run_dir + "/train_metrics.csv";
  // Evaluating or resuming: the checkpoint defines the model.
  const std::string from = !o.eval.empty() ? o.eval : o.resume;
  if (!from.empty()) {
    const dchag::CheckpointInfo info = dchag::read_checkpoint_info(from);
    o.model = info.config;
    o.aggregator = info.aggregator == "cross_attention" ? "cross"
                   : info.aggregator == "linear"        ? "linear"
                                                        : "baseline";
    o.groups = -1;
    o.levels.clear();
  }
  dchag_example::finish_shared_options("train_dchag", o);
  dchag::Impl::require(o.train.steps >= 1, "train_dchag: --steps must be positive, got ",
                       o.train.steps);
  o.train.warmup_steps =
      std::min<std::int64_t>(std::max<std::int64_t>(1, o.train.steps / 10), o.train.steps - 1);
  o.model.validate();
  return o;
}

template <class Policy>
int run(const Options& o) {
  Space space;
  dchag::Communicator world;
  const dchag::ProcessGrid grid = dchag_example::make_grid(world, o);
  const bool root = world.rank() == 0;
  const dchag::ModelConfig& mc = o.model;
  const int local_batch = dchag_example::local_batch("train_dchag", grid, o.batch);

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
    trainer.set_step_count(start);
    if (root) std::printf("resumed from %s at step %lld\n", o.resume.c_str(), (long long)start);
  }
  std::size_t nparams = 0;
  for (auto& p : trainer.parameters()) nparams += p.size();
  if (root) {
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

  auto lat = dchag::latitude_weights<T, Space>(data.latitudes());
  // This rank's inputs are only its own channels; its targets are every output channel.
  dchag::View4<T, Space> x("x", local_batch, model.channel_count(), mc.height, mc.width);
  dchag::View4<T, Space> y("y", local_batch, mc.out_channels, mc.height, mc.width);
  dchag::View4<T, Space> x_all("x_all", local_batch, mc.channels, mc.height, mc.width);
  dchag::View4<T, Space> y_own("y_own", local_batch, model.channel_count(), mc.height, mc.width);
  dchag::View1<T, Space> lead("lead_time", local_batch);
  auto load = [&](dchag::Split split, const std::vector<std::size_t>& global) {
    const std::vector<std::size_t> mine(global.begin() + grid.data_rank() * local_batch,
                                        global.begin() + (grid.data_rank() + 1) * local_batch);
    data.fill(split, mine, x, y_own, lead, model.channel_begin());
    data.fill(split, mine, x_all, y, lead, 0);
  };

  std::ofstream csv;
  if (root && !evaluate) {
    std::filesystem::create_directories(o.run_dir);
    csv.open(o.csv);
    dchag::Impl::require(bool(csv), "train_dchag: cannot write ", o.csv);
    csv << "step,loss,lr,grad_norm,seconds,samples_per_second,gflops_per_second,peak_bytes\n";
  }
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
    losses.push_back(r.loss);
    total += r.seconds;
    if (o.save_every > 0 && trainer.step_count() % o.save_every == 0 &&
        trainer.step_count() < o.train.steps)
      dchag::save_checkpoint(o.run_dir + "/checkpoint_step" + std::to_string(trainer.step_count()) +
                                 ".safetensors",
                             model, &trainer.optimizer(), trainer.step_count());
    if (!root) continue;
    std::printf("step %4lld/%lld  loss %.5f  lr %.2e  |g| %7.3f  %6.3f s  %7.1f samples/s  "
                "%6.1f GFLOP/s  peak %.1f MiB\n",
                (long long)s + 1, (long long)o.train.steps, r.loss, r.lr, r.grad_norm, r.seconds,
                r.samples_per_second, r.gflops_per_second, r.peak_bytes / 1048576.0);
    std::fflush(stdout);
    csv << r.step << ',' << r.loss << ',' << r.lr << ',' << r.grad_norm << ',' << r.seconds << ','
        << r.samples_per_second << ',' << r.gflops_per_second << ',' << r.peak_bytes << '\n';
  }

  const std::string checkpoint = o.run_dir + "/checkpoint.safetensors";
  if (!evaluate && o.save) {
    if (root) std::filesystem::create_directories(o.run_dir);
    dchag::save_checkpoint(checkpoint, model, &trainer.optimizer(), trainer.step_count());
  }

  // Held-out forecast skill on the Test split.
  std::vector<std::size_t> test(o.batch);
  for (std::size_t i = 0; i < test.size(); ++i) test[i] = i;
  load(dchag::Split::Test, test);
  auto pred = model.forward(space, x, lead);
  auto rmse = dchag::lat_weighted_rmse(space, pred, y, lat);
  for (auto& v : rmse) v = dchag::all_reduce_sum(grid.data_comm(), v) / grid.data_size();

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

}  // namespace

int main(int argc, char* argv[]) {
  return dchag_example::example_main(argc, argv, [&] {
    const Options o = parse(argc, argv);
    return dchag_example::with_policy(o.policy, o.aggregator,
                                      [&](auto policy) { return run<typename decltype(policy)::type>(o); });
  });
}
