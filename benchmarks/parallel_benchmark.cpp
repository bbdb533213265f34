// What D-CHAG saves against the tensor-parallel baseline, per rank, at the same model size and
// tensor-parallel width: peak memory, step time, throughput and communication volume of one
// full training step (forward + backward + AdamW) of the forecasting channel ViT.
//
// One configuration per process, so that peak RSS (getrusage ru_maxrss, which cannot be reset
// inside a process) belongs to that configuration alone; scripts/parallel_benchmark.sh runs the
// sweep, one mpirun per row, and collects the rows.
//
//   mpirun -np TP parallel_benchmark --variant baseline|dchag-l|dchag-c --channels C
//          [--groups 16] [--batch 4] [--height 32] [--width 64] [--patch 4] [--dim 128]
//          [--depth 2] [--heads 4] [--out-channels C] [--fsdp 1] [--dp 1] [--steps 3]
//          [--overlap] [--csv FILE [--append]]
//   parallel_benchmark --report FILE.csv [--csv OUT.csv]
//
// The grid is dp x fsdp x tp with tp = world size / (fsdp x dp) (by default all ranks are TP).
// Variants:
//   baseline  dchag::TensorParallel, levels {1}: every TP rank reads and tokenizes all C
//             channels; ClimaX cross-attention over C keys with its heads split over TP;
//   dchag-l   DistributedChannels<LinearAggregator>, levels {G, 1}: rank r reads and tokenizes
//             only its whole groups (about C/tp channels), linear partial aggregation to
//             its group tokens (about G/tp), all-gather, final cross-attention over G keys
//             (heads split over TP);
//   dchag-c   the same with CrossAttentionAggregator as the partial aggregator.
// --batch is the global batch: each rank works on batch / (fsdp x dp) samples. At a fixed
// tp, --fsdp F against --dp F shows what model sharding saves (parameters, gradients and AdamW
// state cut into F slices; activations are the same). --overlap turns on dchag::set_fsdp_overlap
// (the next encoder block's gather and the last block's gradient reduce-scatter in flight while
// a block computes; it changes nothing without --fsdp).
//
// Measured, each the maximum over the ranks:
//   Kokkos memory  peak bytes live in Kokkos allocations over the whole process (model,
//                  AdamW state, inputs, activations; dchag::MemoryTracker), and the bytes live
//                  after construction ("static": parameters, gradients, optimizer state, inputs);
//   RSS            peak resident set of the process, and the RSS before the model was built
//                  (MPI, Kokkos, OpenBLAS), so that the growth is visible too;
//   step time      median and best of --steps timed steps after one warm-up step (which
//                  allocates the activations); every step starts at a barrier and its time is
//                  the slowest rank's; samples/s = batch / best step (on a shared machine the
//                  best step is the least disturbed one; the median is reported beside it);
//   communication  payload bytes this rank sent through dchag's collectives in one step
//                  (dchag::CommStats, ring-algorithm model), and the number of collective calls;
//   comm wait      seconds per step this rank spent blocked in dchag's MPI calls and in waits
//                  for its non-blocking collectives (dchag::CommTimer; the median step, the
//                  slowest rank): time waiting for the other ranks (load imbalance included) or
//                  for the network, which overlap can hide;
//   allocations    Kokkos allocations in one timed step (the most of any step and rank).
//
// --report reads the rows of a sweep and prints them with the ratios to the baseline at the same
// tp and C (memory: D-CHAG / baseline, lower is better; throughput: D-CHAG / baseline, higher is
// better); with --csv it also writes the rows with the ratio columns added. A configuration
// run several times (rounds of the sweep) is represented by its fastest run.
#include <dchag/dchag.hpp>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "bench_util.hpp"

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;
using dchag_bench::fmt;

constexpr double MiB = 1048576.0;

struct Options {
  std::string variant = "baseline";
  dchag::ModelConfig model;
  int groups = 16;
  int batch = 4;
  int steps = 3;
  int fsdp = 1, dp = 1;
  int out_channels = -1;  // -1: as many as the input channels (ClimaX forecasts every variable)
  std::string csv;
  bool append = false;
  bool overlap = false;
};

Options parse(int argc, char* argv[]) {
  Options o;
  o.model.channels = 64;
  o.model.height = 32;
  o.model.width = 64;
  o.model.patch = 4;
  o.model.dim = 128;
  o.model.depth = 2;
  o.model.heads = 4;
  o.model.decoder_depth = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      dchag::Impl::require(i + 1 < argc, "parallel_benchmark: option ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--variant") o.variant = value();
    else if (a == "--channels") o.model.channels = std::stoi(value());
    else if (a == "--groups") o.groups = std::stoi(value());
    else if (a == "--batch") o.batch = std::stoi(value());
    else if (a == "--height") o.model.height = std::stoi(value());
    else if (a == "--width") o.model.width = std::stoi(value());
    else if (a == "--patch") o.model.patch = std::stoi(value());
    else if (a == "--dim") o.model.dim = std::stoi(value());
    else if (a == "--depth") o.model.depth = std::stoi(value());
    else if (a == "--heads") o.model.heads = std::stoi(value());
    else if (a == "--out-channels") o.out_channels = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoi(value());
    else if (a == "--fsdp") o.fsdp = std::stoi(value());
    else if (a == "--dp") o.dp = std::stoi(value());
    else if (a == "--csv") o.csv = value();
    else if (a == "--append") o.append = true;
    else if (a == "--overlap") o.overlap = true;
    else throw dchag::Error("parallel_benchmark: unknown option '" + a + "'");
  }
  dchag::Impl::require(o.variant == "baseline" || o.variant == "dchag-l" || o.variant == "dchag-c",
                       "parallel_benchmark: --variant must be baseline, dchag-l or dchag-c, got '",
                       o.variant, "'");
  dchag::Impl::require(o.batch > 0 && o.steps > 0, "parallel_benchmark: --batch and --steps must ",
                       "be positive");
  // --out-channels K forecasts the first K variables (the head predicts all of them, as ClimaX).
  if (o.out_channels > 0) {
    dchag::Impl::require(o.out_channels <= o.model.channels, "parallel_benchmark: --out-channels ",
                         o.out_channels, " exceeds --channels ", o.model.channels);
    const auto names = dchag::default_variable_names(o.model.channels);
    o.model.out_variables.assign(names.begin(), names.begin() + o.out_channels);
  }
  o.model.levels = o.variant == "baseline" ? std::vector<int>{1} : std::vector<int>{o.groups, 1};
  o.model.validate();
  return o;
}

// Input pixel (b, global channel c, h, w): a pure function of its indices, so that a rank that
// reads only its channels sees exactly the values the full input has there.
template <class View>
void fill(const View& v, int channel_begin, std::uint64_t seed) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t b = 0; b < h.extent(0); ++b)
    for (std::size_t c = 0; c < h.extent(1); ++c)
      for (std::size_t y = 0; y < h.extent(2); ++y)
        for (std::size_t x = 0; x < h.extent(3); ++x)
          h(b, c, y, x) = T(dchag::Impl::fast_normal(dchag::Impl::hash_key(
              seed, b, std::size_t(channel_begin) + c, y * h.extent(3) + x)));
  Kokkos::deep_copy(v, h);
}

double max_over(const dchag::Communicator& comm, double v) {
  return dchag::all_reduce_max(comm, v);
}

const std::vector<std::string> kColumns = {
    "variant", "policy", "tp", "channels", "groups", "batch", "height", "width", "patch", "dim",
    "depth", "heads", "out_channels", "steps", "step_ms_median", "step_ms_best", "samples_per_s",
    "samples_per_s_median",
    "gflop_per_step_rank", "comm_MiB_per_step_rank", "comm_calls_per_step",
    "token_tensor_MiB_rank", "kokkos_static_MiB", "kokkos_peak_MiB", "rss_start_MiB",
    "rss_peak_MiB", "fsdp", "dp", "allocs_per_step", "planned_peak_MiB", "planned_comm_MiB",
    "comm_wait_s_per_step", "overlap"};

template <class Policy>
int run(const Options& o) {
  Space space;
  dchag::set_fsdp_overlap(o.overlap);
  const double rss_start = double(dchag::MemoryTracker::peak_rss_bytes());
  dchag::Communicator world;
  dchag::Impl::require(o.fsdp > 0 && o.dp > 0 && world.size() % (o.fsdp * o.dp) == 0,
                       "parallel_benchmark: fsdp x dp = ", o.fsdp, " x ", o.dp,
                       " does not divide the ", world.size(), " ranks");
  dchag::ProcessGrid grid(world, world.size() / (o.fsdp * o.dp), o.fsdp, o.dp);
  const bool root = world.rank() == 0;
  const dchag::ModelConfig& mc = o.model;
  dchag::Impl::require(o.batch % grid.data_size() == 0, "parallel_benchmark: --batch ", o.batch,
                       " does not split over fsdp x dp = ", grid.data_size(), " ranks");
  const int B = o.batch / grid.data_size();  // this rank's samples

  dchag::MemoryTracker::reset_peak();
  dchag::ChannelViT<T, Space, Policy> model(mc, grid);
  dchag::TrainConfig tc;
  tc.steps = 1000;  // a schedule long enough that the warm-up lr is used throughout
  dchag::ForecastTrainer<decltype(model)> trainer(model, tc);
  // This rank's inputs are only its own channels (all of them under the baseline), and so are
  // its targets under D-CHAG (the outputs it predicts; every output under the baseline).
  dchag::View4<T, Space> x("x", B, model.channel_count(), mc.height, mc.width);
  dchag::View4<T, Space> y("y", B, model.predicted_outputs().size(), mc.height, mc.width);
  dchag::View1<T, Space> lead("lead_time", B);
  dchag::View1<T, Space> lat("lat_weights", mc.height);
  fill(x, model.channel_begin(), 1);  // (every data-parallel rank the same samples: timing only)
  fill(y, model.channel_begin(), 2);
  Kokkos::deep_copy(lead, T(0.25));
  Kokkos::deep_copy(lat, T(1));
  space.fence();
  const double kokkos_static = double(dchag::MemoryTracker::current_total_bytes());

  if (root) {
    std::printf("parallel_benchmark: %s (%s), grid %s, batch %d; rank 0 reads channels [%d, %d)\n"
                "  model %s\n  OPENBLAS_NUM_THREADS=%s, Kokkos %s\n",
                o.variant.c_str(), Policy::name(), grid.describe().c_str(), B,
                model.channel_begin(), model.channel_begin() + model.channel_count(),
                mc.describe().c_str(),
                std::getenv("OPENBLAS_NUM_THREADS") ? std::getenv("OPENBLAS_NUM_THREADS")
                                                    : "(unset: OpenBLAS uses every core)",
                Space::name());
    std::fflush(stdout);
  }

  // Warm-up: allocates the activations and the AdamW moments' first touch.
  MPI_Barrier(world.get());
  double loss = trainer.step(space, x, y, lead, lat).loss;

  std::vector<double> seconds, waits;
  double comm_bytes = 0, comm_calls = 0;
  // Kokkos allocations of the timed steps (the warm-up sized every buffer): 0 unless something
  // allocates per step. FSDP gathers each unit's full parameters into buffers it frees after.
  double allocations = 0;
  for (int s = 0; s < o.steps; ++s) {
    MPI_Barrier(world.get());
    dchag::CommStats::reset();
    dchag::CommTimer::reset();
    const std::uint64_t allocated_before = dchag::MemoryTracker::allocation_count();
    const dchag::StepReport r = trainer.step(space, x, y, lead, lat);
    allocations = std::max(
        allocations, double(dchag::MemoryTracker::allocation_count() - allocated_before));
    // Bytes first: the max below goes through the counted collectives too.
    comm_bytes = std::max(comm_bytes, double(dchag::CommStats::bytes()));
    comm_calls = std::max(comm_calls, double(dchag::CommStats::calls()));
    const double waited = dchag::CommTimer::seconds();
    seconds.push_back(max_over(world, r.seconds));
    waits.push_back(max_over(world, waited));
    loss = r.loss;
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                          : 0.5 * (sorted[sorted.size() / 2 - 1] +
                                                   sorted[sorted.size() / 2]);
  const double best = sorted.front();
  std::sort(waits.begin(), waits.end());
  const double wait = waits.size() % 2 ? waits[waits.size() / 2]
                                       : 0.5 * (waits[waits.size() / 2 - 1] +
                                                waits[waits.size() / 2]);

  // The tensor that makes many channels expensive: T[owned channels, B*L, D].
  const double token_mib =
      double(model.channel_count()) * B * mc.patches() * mc.dim * sizeof(T) / MiB;
  const double gflop = 3.0 * model.forward_flops(B) * 1e-9;
  const double kokkos_static_max = max_over(world, kokkos_static);
  const double kokkos_peak = max_over(world, double(dchag::MemoryTracker::peak_total_bytes()));
  // The planner's prediction for this rank (train/plan.hpp), from the shapes alone.
  const dchag::StepPlan planned = dchag::plan<Policy, T>(mc, dchag::GridShape::of(grid), B);
  const double planned_peak = max_over(world, planned.peak_bytes);
  const double planned_comm = max_over(world, planned.comm_bytes());
  const double rss_start_max = max_over(world, rss_start);
  const double rss_peak = max_over(world, double(dchag::MemoryTracker::peak_rss_bytes()));
  comm_bytes = max_over(world, comm_bytes);
  comm_calls = max_over(world, comm_calls);
  allocations = max_over(world, allocations);
  if (!root) return 0;

  const std::vector<std::string> row = {
      o.variant, std::string("\"") + Policy::name() + "\"", std::to_string(grid.tp()),
      std::to_string(mc.channels), std::to_string(o.variant == "baseline" ? 1 : o.groups),
      std::to_string(o.batch), std::to_string(mc.height), std::to_string(mc.width),
      std::to_string(mc.patch), std::to_string(mc.dim), std::to_string(mc.depth),
      std::to_string(mc.heads), std::to_string(mc.out_channels()), std::to_string(o.steps),
      fmt(median * 1e3, "%.1f"), fmt(best * 1e3, "%.1f"), fmt(o.batch / best, "%.2f"),
      fmt(o.batch / median, "%.2f"), fmt(gflop, "%.2f"), fmt(comm_bytes / MiB, "%.2f"),
      fmt(comm_calls, "%.0f"), fmt(token_mib, "%.1f"), fmt(kokkos_static_max / MiB, "%.1f"),
      fmt(kokkos_peak / MiB, "%.1f"), fmt(rss_start_max / MiB, "%.1f"),
      fmt(rss_peak / MiB, "%.1f"), std::to_string(grid.fsdp()), std::to_string(grid.dp()),
      fmt(allocations, "%.0f"), fmt(planned_peak / MiB, "%.1f"), fmt(planned_comm / MiB, "%.2f"),
      fmt(wait, "%.4f"), o.overlap ? "1" : "0"};
  std::printf("  loss %.4f; step %.1f ms median (%.1f best) of", loss, median * 1e3, best * 1e3);
  for (double s : seconds) std::printf(" %.1f", s * 1e3);
  std::printf(" ms; %.2f samples/s (best); %.1f GFLOP/step/rank; comm %.2f MiB/step/rank in "
              "%.0f calls (planned %.2f), comm wait %.4f s/step%s\n  Kokkos peak %.1f MiB (static %.1f; planned %.1f); "
              "RSS peak %.1f MiB (start %.1f); token tensor %.1f MiB; %.0f allocations/step\n",
              o.batch / best, gflop, comm_bytes / MiB, comm_calls, planned_comm / MiB, wait,
              o.overlap ? " (overlap on)" : "", kokkos_peak / MiB, kokkos_static_max / MiB, planned_peak / MiB, rss_peak / MiB,
              rss_start_max / MiB, token_mib, allocations);
  if (!o.csv.empty()) {
    std::ifstream probe(o.csv);
    const bool header =
        !o.append || !probe.good() || probe.peek() == std::ifstream::traits_type::eof();
    probe.close();
    std::ofstream out(o.csv, o.append ? std::ios::app : std::ios::trunc);
    auto line = [&](const std::vector<std::string>& r) {
      for (std::size_t c = 0; c < r.size(); ++c) out << (c ? "," : "") << r[c];
      out << "\n";
    };
    if (header) line(kColumns);
    line(row);
    dchag::Impl::require(bool(out), "parallel_benchmark: cannot write ", o.csv);
  }
  return 0;
}

// ---- --report: the ratio table over a sweep's rows -------------------------------------------

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char ch : line) {
    if (ch == '\r') continue;  // CRLF files
    if (ch == '"') quoted = !quoted;
    else if (ch == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else cur += ch;
  }
  out.push_back(cur);
  return out;
}

int report(const std::string& in, const std::string& out_csv) {
  std::ifstream f(in);
  dchag::Impl::require(f.good(), "parallel_benchmark --report: cannot read ", in);
  std::string line;
  std::getline(f, line);
  const auto header = split_csv(line);
  std::map<std::string, std::size_t> col;
  for (std::size_t i = 0; i < header.size(); ++i) col[header[i]] = i;
  for (const char* need :
       {"variant", "tp", "channels", "groups", "batch", "step_ms_median", "step_ms_best",
        "kokkos_static_MiB",
        "samples_per_s", "samples_per_s_median", "comm_MiB_per_step_rank",
        "token_tensor_MiB_rank", "kokkos_peak_MiB", "rss_peak_MiB", "rss_start_MiB"})
    dchag::Impl::require(col.count(need), "parallel_benchmark --report: ", in, " has no column '",
                         need, "'");
  std::vector<std::vector<std::string>> rows;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(split_csv(line));
  auto get = [&](const std::vector<std::string>& r, const char* c) { return r.at(col.at(c)); };
  auto num = [&](const std::vector<std::string>& r, const char* c) { return std::stod(get(r, c)); };
  // Columns that older sweeps lack.
  auto has = [&](const std::vector<std::string>& r, const char* c) {
    return col.count(c) && col.at(c) < r.size() && !r[col.at(c)].empty();
  };
  // Sweeps written before the fsdp and dp columns existed ran on dp x fsdp = 1 x 1.
  auto grid_of = [&](const std::vector<std::string>& r, const char* c) {
    return col.count(c) && col.at(c) < r.size() ? get(r, c) : std::string("1");
  };

  // Sweeps written before the overlap column existed ran without it.
  auto overlap_of = [&](const std::vector<std::string>& r) {
    return has(r, "overlap") && get(r, "overlap") == "1";
  };

  // Repeated runs of one configuration (rounds of the sweep): keep the least disturbed one, the
  // run with the fastest step. Memory and communication do not vary between runs.
  {
    std::vector<std::string> key_columns;
    for (const auto& c : header)
      if (std::find(kColumns.begin(), kColumns.end(), c) != kColumns.end() &&
          c.compare(0, 4, "step") != 0 && c.compare(0, 7, "samples") != 0 &&
          c.find("MiB") == std::string::npos && c.compare(0, 4, "gflo") != 0 &&
          c.compare(0, 4, "comm") != 0)
        key_columns.push_back(c);
    std::map<std::vector<std::string>, std::size_t> best;
    std::vector<std::vector<std::string>> kept;
    for (const auto& r : rows) {
      std::vector<std::string> key;
      for (const auto& c : key_columns) key.push_back(get(r, c.c_str()));
      auto it = best.find(key);
      if (it == best.end()) {
        best[key] = kept.size();
        kept.push_back(r);
      } else if (num(r, "step_ms_best") < num(kept[it->second], "step_ms_best")) {
        kept[it->second] = r;
      }
    }
    if (kept.size() < rows.size())
      std::printf("%zu runs of %zu configurations: each configuration's fastest run is kept\n",
                  rows.size(), kept.size());
    rows = std::move(kept);
  }
  const std::vector<std::string> order = {"baseline", "dchag-l", "dchag-c"};
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) {
    const auto ka = std::make_tuple(std::stoi(get(a, "tp")), std::stoi(grid_of(a, "fsdp")),
                                    std::stoi(grid_of(a, "dp")), std::stoi(get(a, "channels")),
                                    std::find(order.begin(), order.end(), get(a, "variant")));
    const auto kb = std::make_tuple(std::stoi(get(b, "tp")), std::stoi(grid_of(b, "fsdp")),
                                    std::stoi(grid_of(b, "dp")), std::stoi(get(b, "channels")),
                                    std::find(order.begin(), order.end(), get(b, "variant")));
    return ka < kb;
  });
  auto baseline_of = [&](const std::vector<std::string>& r) -> const std::vector<std::string>* {
    for (const auto& b : rows)
      if (get(b, "variant") == "baseline" && get(b, "tp") == get(r, "tp") &&
          grid_of(b, "fsdp") == grid_of(r, "fsdp") && grid_of(b, "dp") == grid_of(r, "dp") &&
          get(b, "channels") == get(r, "channels") && get(b, "batch") == get(r, "batch") &&
          overlap_of(b) == overlap_of(r))
        return &b;
    return nullptr;
  };

  dchag_bench::Table table;
  table.columns = {"tp",           "fsdp",        "dp",              "C",
                   "variant",      "G",           "B",               "step ms best",
                   "median",       "samples/s",   "comm MiB/step",   "T MiB",
                   "Kokkos static MiB", "Kokkos peak MiB", "RSS peak MiB",
                   "Kokkos ratio", "Kokkos saved", "RSS ratio",       "throughput ratio",
                   "(median)",     "comm ratio",  "allocs/step", "planned peak MiB",
                   "plan / Kokkos", "planned comm MiB", "comm wait s/step", "overlap"};
  const std::vector<std::string> ratio_columns = {"kokkos_peak_ratio", "rss_peak_ratio",
                                                  "rss_growth_ratio", "throughput_ratio",
                                                  "throughput_ratio_median", "comm_ratio"};
  std::vector<std::vector<std::string>> with_ratios;
  for (const auto& r : rows) {
    const auto* b = baseline_of(r);
    std::vector<std::string> ratios(ratio_columns.size(), "");
    if (b) {
      const double km = num(r, "kokkos_peak_MiB") / num(*b, "kokkos_peak_MiB");
      const double rm = num(r, "rss_peak_MiB") / num(*b, "rss_peak_MiB");
      const double rg = (num(r, "rss_peak_MiB") - num(r, "rss_start_MiB")) /
                        (num(*b, "rss_peak_MiB") - num(*b, "rss_start_MiB"));
      const double tr = num(r, "samples_per_s") / num(*b, "samples_per_s");
      const double tm = num(r, "samples_per_s_median") / num(*b, "samples_per_s_median");
      const double cb = num(*b, "comm_MiB_per_step_rank");
      ratios = {fmt(km, "%.3f"), fmt(rm, "%.3f"), fmt(rg, "%.3f"), fmt(tr, "%.3f"),
                fmt(tm, "%.3f"), cb > 0 ? fmt(num(r, "comm_MiB_per_step_rank") / cb, "%.3f") : ""};
    }
    auto ratio = [&](std::size_t i, const char* suffix = "") {
      return b ? ratios[i] + suffix : std::string("-");
    };
    table.add({get(r, "tp"), grid_of(r, "fsdp"), grid_of(r, "dp"), get(r, "channels"),
               get(r, "variant"), get(r, "groups"), get(r, "batch"), get(r, "step_ms_best"),
               get(r, "step_ms_median"), get(r, "samples_per_s"),
               get(r, "comm_MiB_per_step_rank"), get(r, "token_tensor_MiB_rank"),
               get(r, "kokkos_static_MiB"), get(r, "kokkos_peak_MiB"), get(r, "rss_peak_MiB"),
               ratio(0), b ? fmt(100.0 * (1.0 - std::stod(ratios[0])), "%.0f%%") : "-",
               ratio(1), ratio(3, "x"), ratio(4, "x"), ratio(5),
               col.count("allocs_per_step") ? get(r, "allocs_per_step") : "-",
               has(r, "planned_peak_MiB") ? get(r, "planned_peak_MiB") : "-",
               has(r, "planned_peak_MiB")
                   ? fmt(num(r, "planned_peak_MiB") / num(r, "kokkos_peak_MiB"), "%.3f")
                   : "-",
               has(r, "planned_comm_MiB") ? get(r, "planned_comm_MiB") : "-",
               has(r, "comm_wait_s_per_step") ? get(r, "comm_wait_s_per_step") : "-",
               overlap_of(r) ? "on" : "off"});
    auto full = r;
    full.insert(full.end(), ratios.begin(), ratios.end());
    with_ratios.push_back(full);
  }
  std::printf("Per rank, max over ranks; samples/s from the best step; ratios = variant / "
              "baseline at the same grid and C\n(memory: lower is better; throughput: higher is "
              "better, from the best step and, in brackets, the median step).\n");
  table.print();
  if (!out_csv.empty()) {
    std::ofstream out(out_csv, std::ios::trunc);
    auto h = header;
    h.insert(h.end(), ratio_columns.begin(), ratio_columns.end());
    auto write = [&](const std::vector<std::string>& r) {
      for (std::size_t c = 0; c < r.size(); ++c) {
        // Re-quote what needs it (the policy names hold spaces and parentheses).
        const bool q = r[c].find_first_of(", ()") != std::string::npos;
        out << (c ? "," : "") << (q ? "\"" + r[c] + "\"" : r[c]);
      }
      out << "\n";
    };
    write(h);
    for (const auto& r : with_ratios) write(r);
    dchag::Impl::require(bool(out), "parallel_benchmark --report: cannot write ", out_csv);
    std::printf("wrote %s\n", out_csv.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  // --report needs neither MPI nor Kokkos.
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--report") != 0) continue;
    try {
      dchag::Impl::require(i + 1 < argc, "parallel_benchmark: --report needs a file");
      std::string out;
      for (int j = 1; j + 1 < argc; ++j)
        if (!std::strcmp(argv[j], "--csv")) out = argv[j + 1];
      return report(argv[i + 1], out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    }
  }

  MPI_Init(&argc, &argv);
  int status = 0;
  Kokkos::initialize(argc, argv);
  dchag::MemoryTracker::install();
  {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) dchag_bench::print_blas();
  }
  try {
    const Options o = parse(argc, argv);
    using namespace dchag;
    if (o.variant == "baseline") status = run<TensorParallel>(o);
    else if (o.variant == "dchag-l") status = run<DistributedChannels<LinearAggregator>>(o);
    else status = run<DistributedChannels<CrossAttentionAggregator>>(o);
  } catch (const std::exception& e) {
    // A configuration error is raised on every rank: each says so rather than one hanging.
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    status = 2;
  }
  Kokkos::finalize();
  MPI_Finalize();
  return status;
}
