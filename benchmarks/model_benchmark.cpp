// Training-step cost of the channel vision transformer on one rank: step time, samples/s and
// achieved GFLOP/s as a fraction of the sgemm ceiling measured in the same run, for a
// GEMM-heavy and a channel-heavy model, ClimaX baseline aggregation against D-CHAG.
//   model_benchmark [--csv FILE] [--steps N]
// One configuration (what scripts/compare_pytorch.sh runs against PyTorch):
//   model_benchmark --config gemm-heavy|gemm-heavy-p2|channel-heavy
//                   --aggregation baseline|dchag-l|dchag-c [--steps N] [--warmup N]
//                   [--write-checkpoint FILE]
//   prints one line "result: ... median_ms=... best_ms=... samples_per_s=..." after the table;
//   --write-checkpoint saves the initial weights first, so that another implementation can
//   start its steps from exactly the same model.
#include <dchag/dchag.hpp>
#include <dchag/train/checkpoint.hpp>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;
using dchag_bench::fmt;

struct Case {
  std::string name;
  dchag::ModelConfig model;
  int batch;
};

template <class View>
void randomize(const View& v, unsigned seed) {
  auto h = Kokkos::create_mirror_view(v);
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0, 1);
  for (std::size_t i = 0; i < h.span(); ++i) h.data()[i] = d(gen);
  Kokkos::deep_copy(v, h);
}

struct Timing {
  double best = 0, median = 0, gflops = 0, peak_mib = 0;
  // Most Kokkos allocations of one timed step: a warmed-up step reuses its buffers, so this
  // is 0 unless something allocates per step.
  std::uint64_t allocations = 0;
};

template <class Policy>
Timing time_case(const Case& c, int warmup, int steps, const std::string& checkpoint) {
  Space space;
  dchag::ChannelViT<T, Space, Policy> model(c.model);
  if (!checkpoint.empty()) dchag::save_checkpoint(checkpoint, model, 0);
  dchag::TrainConfig tc;
  tc.steps = 1000;
  dchag::ForecastTrainer<decltype(model)> trainer(model, tc);
  const auto& m = c.model;
  dchag::View4<T, Space> x("x", c.batch, m.channels, m.height, m.width);
  dchag::View4<T, Space> y("y", c.batch, m.out_channels(), m.height, m.width);
  dchag::View1<T, Space> lead("lead", c.batch);
  dchag::View1<T, Space> w("w", m.height);
  randomize(x, 1);
  randomize(y, 2);
  Kokkos::deep_copy(lead, T(0.24));
  Kokkos::deep_copy(w, T(1));
  dchag::MemoryTracker::reset_peak();
  // Warm-up: the first step allocates the activations.
  for (int s = 0; s < std::max(warmup, 1); ++s) trainer.step(space, x, y, lead, w);
  std::vector<double> seconds;
  Timing t;
  for (int s = 0; s < steps; ++s) {
    const std::uint64_t before = dchag::MemoryTracker::allocation_count();
    seconds.push_back(trainer.step(space, x, y, lead, w).seconds);
    t.allocations =
        std::max(t.allocations, dchag::MemoryTracker::allocation_count() - before);
  }
  std::sort(seconds.begin(), seconds.end());
  t.best = seconds.front();
  const std::size_t k = seconds.size();
  t.median = k % 2 ? seconds[k / 2] : 0.5 * (seconds[k / 2 - 1] + seconds[k / 2]);
  t.gflops = 3.0 * model.forward_flops(c.batch) / t.best * 1e-9;
  t.peak_mib = dchag::MemoryTracker::peak_total_bytes() / 1048576.0;
  return t;
}

template <class Policy>
Timing run_case(const Case& c, const std::string& aggregation, int warmup, int steps,
                double ceiling, const std::string& checkpoint, dchag_bench::Table& table) {
  const Timing t = time_case<Policy>(c, warmup, steps, checkpoint);
  table.add({c.name, aggregation, c.model.describe(), std::to_string(c.batch),
             fmt(t.best * 1e3, "%.1f"), fmt(t.median * 1e3, "%.1f"), fmt(c.batch / t.median, "%.1f"),
             fmt(t.gflops, "%.1f"), fmt(100.0 * t.gflops / ceiling, "%.0f%%"),
             fmt(t.peak_mib, "%.1f"), std::to_string(t.allocations)});
  return t;
}

Case gemm_heavy(int patch) {
  Case c{patch == 4 ? "gemm-heavy" : "gemm-heavy-p" + std::to_string(patch), {}, 8};
  c.model.channels = 16;
  c.model.height = 32;
  c.model.width = 64;
  c.model.patch = patch;
  c.model.dim = 512;
  c.model.depth = 4;
  c.model.heads = 8;
  return c;
}

Case channel_heavy() {
  Case c{"channel-heavy", {}, 4};
  c.model.channels = 256;
  c.model.height = 32;
  c.model.width = 64;
  c.model.patch = 4;
  c.model.dim = 128;
  c.model.depth = 2;
  c.model.heads = 4;
  return c;
}

// D-CHAG's first level: 8 groups where there are channels enough (the channel-heavy model),
// else 4 (the GEMM-heavy one, 16 channels).
std::vector<int> levels_for(const Case& c, const std::string& aggregation) {
  if (aggregation == "baseline") return {1};
  return {c.model.channels / 4 >= 8 ? 8 : 4, 1};
}

Timing run_named(Case c, const std::string& aggregation, int warmup, int steps, double ceiling,
                 const std::string& checkpoint, dchag_bench::Table& table) {
  c.model.levels = levels_for(c, aggregation);
  if (aggregation == "baseline")
    return run_case<dchag::TensorParallel>(c, "baseline", warmup, steps, ceiling, checkpoint,
                                           table);
  if (aggregation == "dchag-l")
    return run_case<dchag::DistributedChannels<dchag::LinearAggregator>>(
        c, "D-CHAG-L", warmup, steps, ceiling, checkpoint, table);
  if (aggregation == "dchag-c")
    return run_case<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(
        c, "D-CHAG-C", warmup, steps, ceiling, checkpoint, table);
  throw dchag::Error("model_benchmark: unknown --aggregation '" + aggregation +
                     "' (baseline, dchag-l or dchag-c)");
}

}  // namespace

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  Kokkos::initialize(argc, argv);
  dchag::MemoryTracker::install();
  int status = 0;
  try {
    std::string csv = "model_benchmark.csv", config, aggregation = "baseline", checkpoint;
    int steps = 3, warmup = 1;
    for (int i = 1; i < argc; ++i) {
      const bool more = i + 1 < argc;
      if (!std::strcmp(argv[i], "--csv") && more) csv = argv[++i];
      else if (!std::strcmp(argv[i], "--steps") && more) steps = std::atoi(argv[++i]);
      else if (!std::strcmp(argv[i], "--warmup") && more) warmup = std::atoi(argv[++i]);
      else if (!std::strcmp(argv[i], "--config") && more) config = argv[++i];
      else if (!std::strcmp(argv[i], "--aggregation") && more) aggregation = argv[++i];
      else if (!std::strcmp(argv[i], "--write-checkpoint") && more) checkpoint = argv[++i];
      else throw dchag::Error(std::string("model_benchmark: unknown or incomplete option '") +
                              argv[i] + "'");
    }
    dchag::Impl::require(steps >= 1, "model_benchmark: --steps must be at least 1");
    // The ceiling, measured now on this machine.
    const int n = 2048;
    dchag::View2<T, Space> A("A", n, n), B("B", n, n), C("C", n, n);
    randomize(A, 3);
    randomize(B, 4);
    const double s = dchag_bench::best_seconds(Space(), 3, [&] {
      dchag::gemm(Space(), dchag::Op::N, dchag::Op::N, T(1), A, B, T(0), C);
    });
    const double ceiling = 2.0 * n * n * n / s * 1e-9;
    std::printf("dchag model benchmark on %s: sgemm ceiling %.1f GFLOP/s (2048^3)\n",
                Space::name(), ceiling);
    dchag_bench::print_blas();

    dchag_bench::Table table{{"config", "aggregation", "model", "batch", "best ms", "median ms",
                              "samples/s", "GFLOP/s", "of sgemm", "peak MiB",
                              "allocs/step"}};
    if (!config.empty()) {
      Case c;
      if (config == "gemm-heavy") c = gemm_heavy(4);
      else if (config == "gemm-heavy-p2") c = gemm_heavy(2);
      else if (config == "channel-heavy") c = channel_heavy();
      else throw dchag::Error("model_benchmark: unknown --config '" + config +
                              "' (gemm-heavy, gemm-heavy-p2 or channel-heavy)");
      const Timing t = run_named(c, aggregation, warmup, steps, ceiling, checkpoint, table);
      table.print();
      std::printf("result: config=%s aggregation=%s batch=%d steps=%d median_ms=%.4f "
                  "best_ms=%.4f samples_per_s=%.3f gflops=%.2f sgemm_gflops=%.2f "
                  "allocs_per_step=%llu\n",
                  config.c_str(), aggregation.c_str(), c.batch, steps, t.median * 1e3,
                  t.best * 1e3, c.batch / t.median, t.gflops, ceiling,
                  static_cast<unsigned long long>(t.allocations));
    } else {
      for (const Case& c : {gemm_heavy(4), channel_heavy()})
        for (const char* a : {"baseline", "dchag-l", "dchag-c"})
          run_named(c, a, warmup, steps, ceiling, "", table);
      table.print();
    }
    table.write_csv(csv);
    std::printf("wrote %s\n", csv.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_benchmark: %s\n", e.what());
    status = 2;
  }
  Kokkos::finalize();
  MPI_Finalize();
  return status;
}
