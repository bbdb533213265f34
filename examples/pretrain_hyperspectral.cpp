// Self-supervised pre-training of a D-CHAG channel masked autoencoder on the built-in
// hyperspectral cubes (linear mixing of a few endmember spectra, see io/hyperspectral.hpp) or on
// scenes in ENVI format (--data, io/envi_dataset.hpp): each step hides a random mask_ratio of the patches, encodes the rest and reconstructs every
// band's pixels of the hidden ones. Reports loss, throughput and memory per step.
//
//   mpirun -np 2 pretrain_hyperspectral [--policy dchag|tp] [--tp 2] [--fsdp 1] [--dp 1]
//               [--bands 64] [--height 32] [--width 32] [--patch 4] [--dim 64] [--depth 2]
//               [--heads 4] [--groups 8 | --levels 8,2,1] [--aggregator linear|cross|baseline]
//               [--mask-ratio 0.75] [--decoder-dim 128] [--decoder-depth 2] [--decoder-heads 4]
//               [--scene-scale 128] [--steps 150] [--batch 8] [--lr 2e-3] [--seed 0]
//               [--run-dir runs/pretrain] [--csv FILE] [--save-every K] [--resume CHECKPOINT]
//               [--no-save] [--timeout-minutes M] [--data SCENE.hdr[,SCENE.hdr...]]
//               [--test-fraction 0.2]
//
// --data trains on the height x width tiles of ENVI scenes (.hdr + raw data, any interleave,
// data type and byte order; io/envi.hpp) instead of the built-in cubes: the last --test-fraction
// of each scene's tiles (its bottom rows) are held out, every band is normalised by its mean and
// standard deviation over the training tiles, and the model takes as many bands as the scenes
// have (--bands, when given, must agree). Every rank reads every band of its samples: the
// reconstruction target of the replicated decoder is the whole cube.
// A run writes its per-step metrics (pretrain_metrics.csv) and, at the end, its checkpoint
// (checkpoint.safetensors: weights, AdamW state, step, the model and autoencoder configuration)
// into --run-dir; --save-every K also writes checkpoint_step{K, 2K, ...}.safetensors. --resume
// continues a run from a checkpoint up to --steps in total (pass the original run's --steps:
// the schedule spans them), on any grid, with the same batches and masks as the uninterrupted
// run; the checkpoint defines the model, so a model flag given with it must agree.
//
// --policy dchag distributes the bands over the tensor-parallel ranks (D-CHAG); tp replicates
// them (the tensor-parallel baseline). --fsdp shards parameters, gradients and optimizer state
// (ZeRO-3). --tp defaults to all ranks / (fsdp x dp). --batch is the global batch, split over the
// fsdp x dp ranks. --groups G gives the two-level D-CHAG tree {G, 1}; --levels
// takes any tree; --aggregator baseline is the ClimaX cross-attention over all bands ({1}).
// --scene-scale is the generator's patch_scale, pixels per cycle of the abundance fields at
// wavenumber 1. The example's default, 128 (materials vary over a few patches of a 32x32
// scene), makes the hidden patches predictable from the visible ones; at the generator's own
// default, 32, even the mean of the visible patches explains only ~15% of a hidden patch and
// a short run shows little.
// The loss is the MSE over the masked patches of band-normalised reflectances, so predicting
// each band's mean scores about 1; the summary compares the held-out score with that and with
// predicting every hidden patch as the mean of the sample's visible ones.
#include <dchag/dchag.hpp>
#include <dchag/io/envi_dataset.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/mae_trainer.hpp>
#include <mpi.h>

#include "example_main.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;

struct Options {
  dchag::ModelConfig model;
  dchag::MaeConfig mae;
  dchag::TrainConfig train;
  int batch = 8;
  int tp = 0, fsdp = 1, dp = 1;
  int groups = -1;
  std::vector<int> levels;
  std::string policy = "dchag";
  std::string aggregator = "linear";
  std::string run_dir = "runs/pretrain";
  std::string csv;  // default: run_dir/pretrain_metrics.csv
  std::string resume;
  bool save = true;
  std::int64_t save_every = 0;
  double scene_scale = 128;
  std::vector<std::string> data;  // ENVI scenes; empty: the built-in cubes
  double test_fraction = 0.2;
  double timeout_minutes = 0;
  bool help = false;
  std::set<std::string> given;  // the options on the command line
};

constexpr const char* program = "pretrain_hyperspectral";

// "a.hdr,b.hdr" -> {"a.hdr", "b.hdr"}
std::vector<std::string> scene_list(const std::string& option, const std::string& text) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (std::size_t comma; (comma = text.find(',', begin)) != std::string::npos; begin = comma + 1)
    out.push_back(text.substr(begin, comma - begin));
  out.push_back(text.substr(begin));
  for (const std::string& f : out)
    dchag::Impl::require(!f.empty(), program, ": ", option, " '", text,
                         "' holds an empty file name");
  return out;
}

// The command line alone (the same on every rank: the frame has checked that they agree).
Options parse(int argc, char* argv[]) {
  Options o;
  o.model.channels = 64;
  o.model.height = o.model.width = 32;
  o.model.patch = 4;
  o.model.dim = 64;
  o.model.depth = 2;
  o.model.heads = 4;
  o.model.levels = {8, 1};
  o.model.lead_time = false;  // not used by the autoencoder
  o.train.steps = 150;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      dchag::Impl::require(i + 1 < argc, program, ": option ", a, " needs a value");
      return argv[++i];
    };
    using dchag_example::parse_int;
    using dchag_example::parse_real;
    if (dchag_example::parse_shared_option(program, a, value, o)) continue;
    if (dchag_example::parse_checkpoint_option(program, a, value, o)) continue;
    if (a == "--bands") o.model.channels = parse_int(program, a, value(), 1);
    else if (a == "--mask-ratio") o.mae.mask_ratio = parse_real(program, a, value(), 0.0, false);
    else if (a == "--decoder-dim") o.mae.decoder_dim = parse_int(program, a, value(), 1);
    else if (a == "--decoder-depth") o.mae.decoder_depth = parse_int(program, a, value(), 1);
    else if (a == "--decoder-heads") o.mae.decoder_heads = parse_int(program, a, value(), 1);
    else if (a == "--scene-scale") o.scene_scale = parse_real(program, a, value(), 0.0, false);
    else if (a == "--data") o.data = scene_list(a, value());
    else if (a == "--test-fraction") o.test_fraction = parse_real(program, a, value(), 0.0, true);
    else if (a == "--help" || a == "-h") o.help = true;
    else throw dchag::Error(std::string(program) + ": unknown option '" + a + "'");
    o.given.insert(a);
  }
  if (o.csv.empty()) o.csv = o.run_dir + "/pretrain_metrics.csv";
  dchag_example::finish_shared_options(program, o);
  dchag::Impl::require(o.train.steps >= 20,
                       "pretrain_hyperspectral: --steps must be at least 20, got ", o.train.steps);
  o.train.warmup_steps = std::max<std::int64_t>(1, o.train.steps / 10);
  return o;
}

// What needs more than the command line: the checkpoint's header (resuming: it defines the
// model and the autoencoder), and the checks of the definition.
void resolve(Options& o) {
  if (!o.resume.empty())
    dchag_example::adopt_checkpoint(
        program, o, o.resume, dchag::ChannelMAE<T, Space>::kind(), "--bands",
        [&](dchag_example::CheckpointConflicts& conflicts, const dchag::CheckpointInfo& info) {
          const dchag::MaeConfig& m = o.mae;
          const dchag::MaeConfig& file = info.mae;
          using std::to_string;
          conflicts.check("--mask-ratio", dchag::Impl::exact_number(m.mask_ratio), "mask_ratio",
                          dchag::Impl::exact_number(file.mask_ratio));
          conflicts.check("--decoder-dim", to_string(m.decoder_dim), "decoder_dim",
                          to_string(file.decoder_dim));
          conflicts.check("--decoder-depth", to_string(m.decoder_depth), "decoder_depth",
                          to_string(file.decoder_depth));
          conflicts.check("--decoder-heads", to_string(m.decoder_heads), "decoder_heads",
                          to_string(file.decoder_heads));
          o.mae = file;
        });
  if (!o.data.empty()) {
    // The scenes fix the bands; reading the first header is enough (the data set checks that
    // every scene has the same ones).
    const long bands = dchag::EnviFile(o.data.front()).header().bands;
    if (o.resume.empty() && !o.given.count("--bands")) {
      o.model.channels = int(bands);
      // A tree of the default {8, 1} needs bands divisible by 8; a scene's band count rarely
      // is, so without --groups or --levels the aggregation falls back to the ClimaX baseline.
      if (!o.given.count("--groups") && !o.given.count("--levels") && bands % 8 != 0)
        o.model.levels = {1};
    }
    dchag::Impl::require(o.model.channels == bands, program, ": the model has ",
                         o.model.channels, " bands (--bands or the checkpoint) but ",
                         o.data.front(), " has ", bands);
  }
  o.model.validate();
  o.mae.validate(o.model);
}

// Reference scores of a batch on its masked patches: predicting zero (each band's mean over
// the training scenes) and predicting every hidden patch as the mean of the sample's visible
// patches (per pixel position and band: the visible content alone, without spatial reasoning).
struct Baselines {
  double band_mean, visible_mean;
};

template <class Target, class Mask>
Baselines baselines(const Target& target, const Mask& mask) {
  auto t = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), target);
  auto m = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), mask);
  const std::size_t B = t.extent(0), L = t.extent(1), P = t.extent(2);
  double zero = 0, sum = 0, count = 0;
  std::vector<double> mean(P);
  for (std::size_t b = 0; b < B; ++b) {
    std::fill(mean.begin(), mean.end(), 0.0);
    double kept = 0;
    for (std::size_t l = 0; l < L; ++l) {
      if (m(b, l) != 0) continue;
      kept += 1;
      for (std::size_t p = 0; p < P; ++p) mean[p] += t(b, l, p);
    }
    for (std::size_t l = 0; l < L; ++l) {
      if (m(b, l) == 0) continue;
      for (std::size_t p = 0; p < P; ++p) {
        const double d = t(b, l, p) - mean[p] / kept;
        sum += d * d;
        zero += double(t(b, l, p)) * t(b, l, p);
        count += 1;
      }
    }
  }
  return {zero / count, sum / count};
}

// Data: the built-in generator or an EnviDataset, through the same calls (size, fill).
template <class Policy, class Data>
int train(const dchag::Communicator& world, const Options& o, const Data& data) {
  Space space;
  const dchag::ProcessGrid grid = dchag_example::make_grid(world, o);
  const bool root = world.rank() == 0;
  const dchag::ModelConfig& mc = o.model;
  const int local_batch = dchag_example::local_batch(program, grid, o.batch);

  dchag::ChannelMAE<T, Space, Policy> model(mc, o.mae, grid);
  dchag::MaeTrainer<decltype(model)> trainer(model, o.train);
  std::int64_t start = 0;
  if (!o.resume.empty()) {
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
    std::printf("masked autoencoder: %s (the encoder sees %d of %d patches)\n",
                o.mae.describe().c_str(), model.kept_patches(), model.patches());
    std::printf("parallel: %s, grid %s; rank 0 holds %zu parameter values and reads bands "
                "[%d, %d)\n",
                Policy::name(), grid.describe().c_str(), nparams, model.channel_begin(),
                model.channel_begin() + model.channel_count());
    std::printf("training: steps=%lld global batch=%d lr=%g warmup=%lld on %s (concurrency %d)\n",
                (long long)o.train.steps, o.batch, o.train.lr, (long long)o.train.warmup_steps,
                Space::name(), dchag::Impl::concurrency(space));
  }

  // This rank reads only its own bands, which are also the bands it reconstructs.
  dchag::View4<T, Space> x("x", local_batch, model.channel_count(), mc.height, mc.width);
  auto load = [&](dchag::Split split, const std::vector<std::size_t>& global) {
    const std::vector<std::size_t> mine(global.begin() + grid.data_rank() * local_batch,
                                        global.begin() + (grid.data_rank() + 1) * local_batch);
    data.fill(split, mine, x, model.channel_begin());
  };

  std::ofstream csv;
  dchag_example::prepare_run_dir(world, program, o.run_dir, csv, o.csv, start);
  // Scenes drawn at random from the seed (a rerun sees the same batches; every rank draws the
  // same global batch and keeps its dp share).
  std::mt19937_64 pick(mc.seed);
  std::uniform_int_distribution<std::size_t> any(0, data.size(dchag::Split::Train) - 1);
  std::vector<std::size_t> indices(o.batch);
  std::vector<double> losses;
  double total = 0;
  for (std::int64_t s = 0; s < o.train.steps; ++s) {
    for (auto& i : indices) i = any(pick);
    if (s < start) continue;  // batches the resumed run already trained on
    load(dchag::Split::Train, indices);
    const dchag::StepReport r = trainer.step(space, x);
    dchag_example::watchdog().beat();
    losses.push_back(r.loss);
    total += r.seconds;
    if (o.save_every > 0 && trainer.step_count() % o.save_every == 0 &&
        trainer.step_count() < o.train.steps)
      dchag::save_checkpoint(o.run_dir + "/checkpoint_step" + std::to_string(trainer.step_count()) +
                                 ".safetensors",
                             model, &trainer.optimizer(), trainer.step_count());
    dchag_example::log_step(world, program, "masked MSE", s, o.train.steps, r, csv, o.csv);
  }

  // Held-out reconstruction of hidden patches on the Test split, with masks no training step
  // drew (mask step = steps).
  std::vector<std::size_t> test(o.batch);
  for (std::size_t i = 0; i < test.size(); ++i) test[i] = i % data.size(dchag::Split::Test);
  load(dchag::Split::Test, test);
  const auto pred = model.forward(space, x, std::uint64_t(o.train.steps));
  dchag::View3<T, Space> target("target", pred.extent(0), pred.extent(1), pred.extent(2));
  dchag::View3<T, Space> dpred("dpred", pred.extent(0), pred.extent(1), pred.extent(2));
  dchag::mae_target(space, x, mc.patch, target);
  double test_mse = dchag::mae_loss(space, model, pred, target, dpred);
  test_mse = dchag::all_reduce_sum(grid.data_comm(), test_mse) / grid.data_size();
  Baselines base = baselines(target, model.mask());
  base.band_mean = dchag::all_reduce_sum(grid.data_comm(), base.band_mean) / grid.data_size();
  base.visible_mean = dchag::all_reduce_sum(grid.data_comm(), base.visible_mean) / grid.data_size();
  const std::string checkpoint = o.run_dir + "/checkpoint.safetensors";
  if (o.save) dchag::save_checkpoint(checkpoint, model, &trainer.optimizer(), trainer.step_count());
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
    std::printf("masked MSE: first %zu steps %.5f, last %zu steps %.5f (ratio %.3f)\n", k, first,
                k, last, last / first);
  }
  std::printf("held-out masked MSE %.4f; on the same patches each band's mean scores %.4f and "
              "the mean of the sample's visible patches %.4f\n",
              test_mse, base.band_mean, base.visible_mean);
  std::printf("per-step metrics written to %s\n", o.csv.c_str());
  if (o.save) std::printf("checkpoint written to %s\n", checkpoint.c_str());
  return 0;
}

template <class Policy>
int run(const dchag::Communicator& world, const Options& o) {
  const dchag::ModelConfig& mc = o.model;
  if (o.data.empty()) {
    dchag::HyperspectralConfig hc;
    hc.bands = mc.channels;
    hc.height = mc.height;
    hc.width = mc.width;
    hc.seed = mc.seed + 1;
    hc.patch_scale = o.scene_scale;
    return train<Policy>(world, o, dchag::HyperspectralGenerator<T>(hc));
  }
  dchag::EnviDatasetConfig ec;
  ec.files = o.data;
  ec.height = mc.height;
  ec.width = mc.width;
  ec.test_fraction = o.test_fraction;
  std::unique_ptr<dchag::EnviDataset<T>> data;
  // Every rank opens the scenes; a bad file is reported by each of them.
  dchag::on_every_rank(world, [&] { data = std::make_unique<dchag::EnviDataset<T>>(ec); });
  if (world.rank() == 0)
    std::printf("data: %zu ENVI scene(s), %d bands, %zu Train and %zu Test tiles of %dx%d\n",
                o.data.size(), data->bands(), data->size(dchag::Split::Train),
                data->size(dchag::Split::Test), mc.height, mc.width);
  return train<Policy>(world, o, *data);
}

}  // namespace

int main(int argc, char* argv[]) {
  return dchag_example::example_main(argc, argv, [&](const dchag::Communicator& world) {
    Options o = parse(argc, argv);
    if (o.help) {
      if (world.rank() == 0)
        std::printf("see the comment at the top of examples/pretrain_hyperspectral.cpp\n");
      return 0;
    }
    dchag::on_every_rank(world, [&] { resolve(o); });
    dchag_example::watchdog().arm(o.timeout_minutes * 60, world.rank());
    return dchag_example::with_policy(o.policy, o.aggregator, [&](auto policy) {
      return run<typename decltype(policy)::type>(world, o);
    });
  });
}
