// dchag_plan: what one training step of the forecasting channel ViT needs per rank, predicted
// from the model's shapes (dchag::plan, train/plan.hpp) without MPI ranks or a GPU.
//
//   dchag_plan [model options] [--variant baseline|dchag-l|dchag-c] [--tp 1] [--fsdp 1]
//              [--dp 1] [--batch GLOBAL | --batch-per-rank B] [--scalar float|double]
//              [--overlap]
//   dchag_plan --frontier [--gpu-gib 64] [--height 128] [--width 256] [--patch 4] [--depth 24]
//              [--batch-per-rank 2] [--groups 32] [--tp 8]
//
// Model options (as parallel_benchmark): --channels C [64] --out-channels [C] --height [32]
// --width [64] --patch [4] --dim [128] --depth [2] --heads [4] --mlp-ratio [4]
// --decoder-depth [1] --groups G [16: D-CHAG levels {G, 1}; the baseline uses {1}]
// --no-lead-time. --overlap: model sharding overlaps its communication with compute
// (dchag::set_fsdp_overlap), which holds more of the model whole at once.
//
// The first form prints one row per rank (every tensor-parallel rank; fsdp ranks differ only by
// their slice of the padding), the second the paper-scale table: D in {1024, 2048, 4096},
// C in {256, 512, 1024}, tp = 8, fsdp in {1, 8, 32, 128}, each policy, and whether its peak fits
// on a GPU of --gpu-gib GiB. Scalars are fp32 (or fp64): the planner does not yet count what a
// bf16 model keeps in float (LayerNorm statistics, master weights), so it plans none.
#include <dchag/dchag.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

constexpr double MiB = 1048576.0, GiB = 1073741824.0;

struct Options {
  dchag::ModelConfig model;
  std::string variant = "dchag-l";
  int groups = 16;
  int tp = 1, fsdp = 1, dp = 1;
  int batch = -1, batch_per_rank = -1;
  bool double_precision = false;
  bool frontier = false;
  double gpu_gib = 64;
  int out_count = 0;  // --out-channels K: the first K variables are the outputs
  bool out_set = false, height_set = false, width_set = false, depth_set = false,
       groups_set = false, tp_set = false;
};

Options parse(int argc, char* argv[]) {
  Options o;
  o.model.channels = 64;
  o.model.dim = 128;
  o.model.depth = 2;
  o.model.heads = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      dchag::Impl::require(i + 1 < argc, "dchag_plan: option ", a, " needs a value");
      return argv[++i];
    };
    auto integer = [&]() { return std::stoi(value()); };
    if (a == "--channels") o.model.channels = integer();
    else if (a == "--out-channels") o.out_count = integer(), o.out_set = true;
    else if (a == "--height") o.model.height = integer(), o.height_set = true;
    else if (a == "--width") o.model.width = integer(), o.width_set = true;
    else if (a == "--patch") o.model.patch = integer();
    else if (a == "--dim") o.model.dim = integer();
    else if (a == "--depth") o.model.depth = integer(), o.depth_set = true;
    else if (a == "--heads") o.model.heads = integer();
    else if (a == "--mlp-ratio") o.model.mlp_ratio = std::stod(value());
    else if (a == "--decoder-depth") o.model.decoder_depth = integer();
    else if (a == "--groups") o.groups = integer(), o.groups_set = true;
    else if (a == "--no-lead-time") o.model.lead_time = false;
    else if (a == "--variant") o.variant = value();
    else if (a == "--tp") o.tp = integer(), o.tp_set = true;
    else if (a == "--fsdp") o.fsdp = integer();
    else if (a == "--dp") o.dp = integer();
    else if (a == "--batch") o.batch = integer();
    else if (a == "--batch-per-rank") o.batch_per_rank = integer();
    else if (a == "--scalar") {
      const std::string s = value();
      dchag::Impl::require(s == "float" || s == "double", "dchag_plan: --scalar is float or ",
                           "double (bf16 is not planned yet), got '", s, "'");
      o.double_precision = s == "double";
    } else if (a == "--overlap") dchag::set_fsdp_overlap(true);
    else if (a == "--frontier") o.frontier = true;
    else if (a == "--gpu-gib") o.gpu_gib = std::stod(value());
    else if (a == "-h" || a == "--help") {
      std::printf("see the top of examples/dchag_plan.cpp, or README.md (dchag_plan)\n");
      std::exit(0);
    } else throw dchag::Error("dchag_plan: unknown option '" + a + "'");
  }
  dchag::Impl::require(o.variant == "baseline" || o.variant == "dchag-l" || o.variant == "dchag-c",
                       "dchag_plan: --variant must be baseline, dchag-l or dchag-c, got '",
                       o.variant, "'");
  return o;
}

// The first k of the model's variables as its outputs (the head predicts all of them).
dchag::ModelConfig with_outputs(dchag::ModelConfig m, int k) {
  dchag::Impl::require(k >= 1 && k <= m.channels, "dchag_plan: --out-channels ", k,
                       " is not in [1, --channels ", m.channels, "]");
  const std::vector<std::string> names = m.variable_names();
  m.out_variables.assign(names.begin(), names.begin() + k);
  return m;
}

dchag::ModelConfig with_variant(dchag::ModelConfig m, const std::string& variant, int groups) {
  m.levels = variant == "baseline" ? std::vector<int>{1} : std::vector<int>{groups, 1};
  return m;
}

template <class T>
dchag::StepPlan plan_for(const std::string& variant, const dchag::ModelConfig& m,
                         const dchag::GridShape& g, int batch) {
  using namespace dchag;
  if (variant == "baseline") return plan<TensorParallel, T>(m, g, batch);
  if (variant == "dchag-l") return plan<DistributedChannels<LinearAggregator>, T>(m, g, batch);
  return plan<DistributedChannels<CrossAttentionAggregator>, T>(m, g, batch);
}

dchag::StepPlan plan_any(const Options& o, const std::string& variant, const dchag::ModelConfig& m,
                         const dchag::GridShape& g, int batch) {
  return o.double_precision ? plan_for<double>(variant, m, g, batch)
                            : plan_for<float>(variant, m, g, batch);
}

int per_rank(Options o) {
  if (o.out_set) o.model = with_outputs(o.model, o.out_count);
  const dchag::ModelConfig m = with_variant(o.model, o.variant, o.groups);
  const dchag::GridShape grid(o.tp, o.fsdp, o.dp);
  int batch = o.batch_per_rank;
  if (batch < 0) {
    const int global = o.batch > 0 ? o.batch : 4 * grid.data_size();
    dchag::Impl::require(global % grid.data_size() == 0, "dchag_plan: --batch ", global,
                         " does not split over fsdp x dp = ", grid.data_size(), " ranks");
    batch = global / grid.data_size();
  }
  plan_any(o, o.variant, m, grid, batch);  // a definition or split the model refuses stops here
  std::printf("dchag_plan: %s, %s, %d samples per rank, %s%s\n  model %s\n", o.variant.c_str(),
              grid.describe().c_str(), batch, o.double_precision ? "fp64" : "fp32",
              dchag::fsdp_overlap() && o.fsdp > 1 ? ", sharding overlapped" : "",
              m.describe().c_str());
  std::printf("%4s %4s %9s %12s %10s %10s %10s %10s %10s %10s %10s %10s | %9s %9s %9s %9s %9s "
              "%9s | %10s\n",
              "tp", "fsdp", "channels", "params", "param MiB", "grad MiB", "adamw MiB",
              "input MiB", "activ MiB", "bwd MiB", "trans MiB", "PEAK MiB", "dchag MiB",
              "tp-AR MiB", "fsdp-AG", "fsdp-RS", "dp-AR MiB", "comm MiB", "GFLOP/step");
  const int fsdp_rows = grid.fsdp() <= 4 ? grid.fsdp() : 1;
  for (int f = 0; f < fsdp_rows; ++f)
    for (int t = 0; t < grid.tp(); ++t) {
      const dchag::StepPlan p = plan_any(o, o.variant, m, grid.at(t, f), batch);
      const std::string ch = std::to_string(p.channel_begin) + "-" +
                             std::to_string(p.channel_begin + p.channel_count);
      std::printf("%4d %4d %9s %12zu %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f | "
                  "%9.2f %9.2f %9.2f %9.2f %9.2f %9.2f | %10.2f\n",
                  t, f, ch.c_str(), p.parameter_elements, p.parameter_bytes / MiB,
                  p.gradient_bytes / MiB, p.optimizer_bytes / MiB, p.input_bytes / MiB,
                  p.activation_bytes / MiB, p.backward_bytes / MiB, p.transient_bytes / MiB,
                  p.peak_bytes / MiB, p.dchag_gather_bytes / MiB, p.tp_all_reduce_bytes / MiB,
                  p.fsdp_gather_bytes / MiB, p.fsdp_reduce_scatter_bytes / MiB,
                  p.dp_all_reduce_bytes / MiB, p.comm_bytes() / MiB, p.step_flops() * 1e-9);
    }
  if (fsdp_rows < grid.fsdp())
    std::printf("(fsdp rank 0 shown; the other fsdp ranks differ only by their share of the "
                "padding)\n");
  std::printf("params: elements in this rank's parameter list; activ: buffers the forward keeps "
              "for backward; bwd: gradient buffers of the backward (both kept between steps); "
              "trans: FSDP units gathered at once; PEAK: the Kokkos peak of a step. Comm: bytes "
              "this rank sends per step (ring model).\n");
  return 0;
}

int frontier(Options o) {
  if (!o.height_set) o.model.height = 128;
  if (!o.width_set) o.model.width = 256;
  if (!o.depth_set) o.model.depth = 24;
  if (!o.groups_set) o.groups = 32;
  if (!o.tp_set) o.tp = 8;
  const int batch = o.batch_per_rank > 0 ? o.batch_per_rank : 2;
  const double limit = o.gpu_gib * GiB;
  dchag::ModelConfig base = o.model;
  std::printf("dchag_plan --frontier: peak per GPU of one training step (forward, backward, "
              "AdamW), fp32 weights, gradients and moments (bf16 not planned), %d samples per "
              "rank, image %dx%d patch %d (L = %d), depth %d, heads D/64, mlp_ratio %g, "
              "D-CHAG levels {%d, 1}, tp = %d; fits: peak <= %.0f GiB. Rank 0 (the largest "
              "share of the fsdp padding).\n",
              batch, base.height, base.width, base.patch,
              (base.height / base.patch) * (base.width / base.patch), base.depth, base.mlp_ratio,
              o.groups, o.tp, o.gpu_gib);
  std::printf("%5s %5s %9s %5s %10s %10s %10s %10s %10s %10s %10s  %-5s %10s\n", "D", "C",
              "variant", "fsdp", "param GiB", "grad GiB", "adamw GiB", "activ GiB", "bwd GiB",
              "trans GiB", "PEAK GiB", "fits", "comm GiB");
  for (int D : {1024, 2048, 4096})
    for (int C : {256, 512, 1024})
      for (const char* v : {"baseline", "dchag-l", "dchag-c"})
        for (int f : {1, 8, 32, 128}) {
          dchag::ModelConfig m = base;
          m.dim = D;
          m.heads = D / 64;
          m.channels = C;
          if (o.out_set) m = with_outputs(m, o.out_count);
          m = with_variant(m, v, o.groups);
          try {
            const dchag::StepPlan p = plan_any(o, v, m, dchag::GridShape(o.tp, f, 1), batch);
            std::printf("%5d %5d %9s %5d %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f  %-5s "
                        "%10.2f\n",
                        D, C, v, f, p.parameter_bytes / GiB, p.gradient_bytes / GiB,
                        p.optimizer_bytes / GiB, p.activation_bytes / GiB,
                        p.backward_bytes / GiB, p.transient_bytes / GiB, p.peak_bytes / GiB,
                        p.peak_bytes <= limit ? "yes" : "NO", p.comm_bytes() / GiB);
          } catch (const dchag::Error& e) {
            std::printf("%5d %5d %9s %5d  not possible: %s\n", D, C, v, f, e.what());
          }
        }
  return 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  try {
    const Options o = parse(argc, argv);
    return o.frontier ? frontier(o) : per_rank(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
