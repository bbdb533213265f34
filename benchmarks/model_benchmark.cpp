// Training-step cost of the channel vision transformer on one rank: step time, samples/s and
// achieved GFLOP/s as a fraction of the sgemm ceiling measured in the same run, for a
// GEMM-heavy and a channel-heavy model, ClimaX baseline aggregation against D-CHAG.
//   model_benchmark [--csv FILE] [--steps N]
#include <dchag/dchag.hpp>
#include <mpi.h>

#include <cstring>
#include <random>
#include <string>

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

template <class Policy>
void run_case(const Case& c, const std::string& aggregation, int steps, double ceiling,
              dchag_bench::Table& table) {
  Space space;
  dchag::ChannelViT<T, Space, Policy> model(c.model);
  dchag::TrainConfig tc;
  tc.steps = 1000;
  dchag::ForecastTrainer<decltype(model)> trainer(model, tc);
  const auto& m = c.model;
  dchag::View4<T, Space> x("x", c.batch, m.channels, m.height, m.width);
  dchag::View4<T, Space> y("y", c.batch, m.out_channels, m.height, m.width);
  dchag::View1<T, Space> lead("lead", c.batch);
  dchag::View1<T, Space> w("w", m.height);
  randomize(x, 1);
  randomize(y, 2);
  Kokkos::deep_copy(lead, T(0.24));
  Kokkos::deep_copy(w, T(1));
  dchag::MemoryTracker::reset_peak();
  trainer.step(space, x, y, lead, w);  // warm-up: allocates activations
  double best = 1e30;
  for (int s = 0; s < steps; ++s) best = std::min(best, trainer.step(space, x, y, lead, w).seconds);
  const double gflops = 3.0 * model.forward_flops(c.batch) / best * 1e-9;
  table.add({c.name, aggregation, m.describe(), std::to_string(c.batch), fmt(best * 1e3, "%.1f"),
             fmt(c.batch / best, "%.1f"), fmt(gflops, "%.1f"), fmt(100.0 * gflops / ceiling, "%.0f%%"),
             fmt(dchag::MemoryTracker::peak_total_bytes() / 1048576.0, "%.1f")});
}

}  // namespace

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  Kokkos::initialize(argc, argv);
  dchag::MemoryTracker::install();
  {
    std::string csv = "model_benchmark.csv";
    int steps = 3;
    for (int i = 1; i < argc; ++i) {
      if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
      else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    }
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

    Case gemm_heavy{"gemm-heavy", {}, 8};
    gemm_heavy.model.channels = gemm_heavy.model.out_channels = 16;
    gemm_heavy.model.height = 32;
    gemm_heavy.model.width = 64;
    gemm_heavy.model.patch = 4;
    gemm_heavy.model.dim = 512;
    gemm_heavy.model.depth = 4;
    gemm_heavy.model.heads = 8;
    Case channel_heavy{"channel-heavy", {}, 4};
    channel_heavy.model.channels = channel_heavy.model.out_channels = 256;
    channel_heavy.model.height = 32;
    channel_heavy.model.width = 64;
    channel_heavy.model.patch = 4;
    channel_heavy.model.dim = 128;
    channel_heavy.model.depth = 2;
    channel_heavy.model.heads = 4;

    dchag_bench::Table table{{"config", "aggregation", "model", "batch", "step ms", "samples/s",
                              "GFLOP/s", "of sgemm", "peak MiB"}};
    for (Case c : {gemm_heavy, channel_heavy}) {
      c.model.levels = {1};
      run_case<dchag::TensorParallel>(c, "baseline", steps, ceiling, table);
      c.model.levels = {c.model.channels / 4 >= 8 ? 8 : 4, 1};
      run_case<dchag::DistributedChannels<dchag::LinearAggregator>>(c, "D-CHAG-L", steps, ceiling,
                                                                    table);
      run_case<dchag::DistributedChannels<dchag::CrossAttentionAggregator>>(c, "D-CHAG-C", steps,
                                                                            ceiling, table);
    }
    table.print();
    table.write_csv(csv);
    std::printf("wrote %s\n", csv.c_str());
  }
  Kokkos::finalize();
  MPI_Finalize();
  return 0;
}
