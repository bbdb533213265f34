#ifndef DCHAG_TRAIN_PLAN_HPP
#define DCHAG_TRAIN_PLAN_HPP

// dchag::plan: what one training step of ChannelViT (forward, backward, AdamW; the
// ForecastTrainer's step) needs on one rank of a dp x fsdp x tp grid, predicted without building
// the model and without MPI ranks of that size: parameter, gradient and optimizer bytes, the
// buffers the layers keep for backward and for their gradients, the transient peak of model
// sharding, the bytes every collective moves (dchag::CommStats' ring model) and the FLOPs.
//
// Nothing here is fitted. The walk follows the structure ChannelViT builds (model/channel_vit.hpp:
// stem, position and lead-time embeddings, encoder blocks, norm, head) and, layer by layer, the
// tensors each one allocates: its parameter storage in visit_storage() order (which is how
// ShardedUnit lays a unit out), the buffers its forward and backward allocate on first use and
// keep for the next step, and its collectives. Channel ownership comes from the policy itself
// (Policy::owned_channels on a GridShape), so a policy that splits channels differently is
// planned as it runs. A change to a layer's buffers must be followed here; the tests compare the
// plan against the model's parameter list and against dchag::MemoryTracker.
//
// Every Kokkos allocation is counted as Kokkos reports it to MemoryTracker: its bytes rounded up
// to a multiple of 8. What the walk leaves out is small and does not grow with the model: Kokkos'
// own scratch (about 11 KB on the Serial backend), reduction results and the host mirrors of
// the parameter tables.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/detection.hpp>
#include <dchag/core/error.hpp>
#include <dchag/model/channel_stem.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/forecast_head.hpp>
#include <dchag/parallel/policy.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/parallel/sharded_unit.hpp>
#include <dchag/train/parameter_table.hpp>

namespace dchag {

// The sizes of a process grid (dp x fsdp x tp, as ProcessGrid) and the coordinates of one of its
// ranks, without communicators: what a policy's owned_channels reads (tp(), tp_rank()).
class GridShape {
 public:
  GridShape(int tp = 1, int fsdp = 1, int dp = 1, int tp_rank = 0, int fsdp_rank = 0,
            int dp_rank = 0)
      : tp_(tp), fsdp_(fsdp), dp_(dp), tp_rank_(tp_rank), fsdp_rank_(fsdp_rank),
        dp_rank_(dp_rank) {
    Impl::require(tp > 0 && fsdp > 0 && dp > 0, "dchag::GridShape: sizes must be positive, got ",
                  "tp = ", tp, ", fsdp = ", fsdp, ", dp = ", dp);
    Impl::require(0 <= tp_rank && tp_rank < tp && 0 <= fsdp_rank && fsdp_rank < fsdp &&
                      0 <= dp_rank && dp_rank < dp,
                  "dchag::GridShape: rank (dp, fsdp, tp) = (", dp_rank, ", ", fsdp_rank, ", ",
                  tp_rank, ") is outside the grid ", dp, " x ", fsdp, " x ", tp);
  }
  // The shape of a live grid and the coordinates of its rank.
  static GridShape of(const ProcessGrid& g) {
    return GridShape(g.tp(), g.fsdp(), g.dp(), g.tp_rank(), g.fsdp_rank(), g.dp_rank());
  }
  // The same grid seen from another rank.
  GridShape at(int tp_rank, int fsdp_rank = 0, int dp_rank = 0) const {
    return GridShape(tp_, fsdp_, dp_, tp_rank, fsdp_rank, dp_rank);
  }

  int tp() const { return tp_; }
  int fsdp() const { return fsdp_; }
  int dp() const { return dp_; }
  int size() const { return tp_ * fsdp_ * dp_; }
  int tp_rank() const { return tp_rank_; }
  int fsdp_rank() const { return fsdp_rank_; }
  int dp_rank() const { return dp_rank_; }
  int data_size() const { return dp_ * fsdp_; }
  int data_rank() const { return dp_rank_ * fsdp_ + fsdp_rank_; }
  std::string describe() const {
    return Impl::concat("dp x fsdp x tp = ", dp_, " x ", fsdp_, " x ", tp_);
  }

 private:
  int tp_, fsdp_, dp_, tp_rank_, fsdp_rank_, dp_rank_;
};

// One rank's step, in bytes (of the scalar the model is built with) and FLOPs.
struct StepPlan {
  // Elements and tensors of the rank's parameter list (ChannelViT::parameters(): whole tensors,
  // tensor-parallel pieces, under model sharding this rank's slices).
  std::size_t parameter_elements = 0;
  std::size_t parameter_tensors = 0;
  // Storage: under model sharding the rank's slices (shard values and gradients; the layers'
  // own storage is freed), otherwise the layers' value and gradient views.
  double parameter_bytes = 0;
  double gradient_bytes = 0;
  double optimizer_bytes = 0;   // AdamW's first and second moments (train/adamw.hpp)
  double input_bytes = 0;       // x (this rank's channels), targets, lead times, latitude weights
  double activation_bytes = 0;  // buffers the forward allocates and backward reads (kept)
  double backward_bytes = 0;    // gradient buffers of the backward (kept between steps)
  double persistent_bytes = 0;  // everything above plus sharding / dp buffers
  double transient_bytes = 0;   // the most live at once only during part of the step (FSDP)
  double peak_bytes = 0;        // persistent + transient: the Kokkos peak of a step
  // Payload bytes this rank sends per step, as dchag::CommStats counts them.
  double dchag_gather_bytes = 0;     // D-CHAG: all-gather of the group tokens over TP
  double tp_all_reduce_bytes = 0;    // tensor-parallel all-reduces (stem, blocks)
  double fsdp_gather_bytes = 0;      // model sharding: all-gathers of the units
  double fsdp_reduce_scatter_bytes = 0;
  double dp_all_reduce_bytes = 0;    // data-parallel gradient averaging
  double scalar_bytes = 0;           // loss and gradient-norm reductions
  double comm_bytes() const {
    return dchag_gather_bytes + tp_all_reduce_bytes + fsdp_gather_bytes +
           fsdp_reduce_scatter_bytes + dp_all_reduce_bytes + scalar_bytes;
  }
  double forward_flops = 0;  // ChannelViT::forward_flops(batch)
  double step_flops() const { return 3.0 * forward_flops; }  // backward about twice the forward
  // The rank's input channels [channel_begin, channel_begin + channel_count).
  int channel_begin = 0, channel_count = 0;
};

namespace Impl {

template <class P, class G>
using policy_owned_on_t =
    decltype(P::owned_channels(std::declval<const ChannelLayout&>(), std::declval<const G&>()));

// One storage view of a unit: the sizes of the parameters it holds, end to end.
struct PlanView {
  std::vector<std::size_t> params;
  std::size_t size() const {
    std::size_t n = 0;
    for (auto p : params) n += p;
    return n;
  }
};

// The walk: collects storage views per unit (ShardedUnit's units of ChannelViT), the buffers
// of forward and backward, collectives and FLOPs, then sums them for the rank.
class StepPlanner {
 public:
  StepPlanner(std::size_t scalar, const GridShape& grid, bool overlap)
      : S_(scalar), grid_(grid), overlap_(overlap) {}

  void begin_unit() { units_.emplace_back(); }
  // A storage view holding `count` parameters of `each` elements.
  void view(std::size_t count, std::size_t each) {
    units_.back().push_back(PlanView{std::vector<std::size_t>(count, each)});
  }
  void view(std::size_t elements) { view(1, elements); }
  void forward(std::size_t elements) { forward_ += bytes(elements); }
  void forward_raw(std::size_t raw_bytes) { forward_ += double((raw_bytes + 7) / 8 * 8); }
  void backward(std::size_t elements) { backward_ += bytes(elements); }

  // Ring-model payloads (parallel/collectives.hpp).
  double all_reduce(std::size_t elements, int p) const {
    return p > 1 ? 2.0 * (p - 1) * double(elements * S_) / p : 0.0;
  }
  double all_gather(std::size_t local_elements, int p) const {
    return double(p - 1) * double(local_elements * S_);
  }
  // Parts of any size: what the rank receives, the whole less its own part.
  double all_gatherv(std::size_t total_elements, std::size_t local_elements) const {
    return double((total_elements - local_elements) * S_);
  }

  double bytes(std::size_t elements) const { return double((elements * S_ + 7) / 8 * 8); }

  StepPlan finish(StepPlan r) const {
    const int f = grid_.fsdp();
    std::vector<std::size_t> tensors;  // this rank's parameter sizes
    double sharded_storage = 0, unit_full_max = 0;
    std::vector<double> unit_full;
    for (const auto& unit : units_) {
      // ShardedUnit: every view starts on a 16-element boundary of the flat buffer.
      std::size_t total = 0;
      std::vector<std::pair<std::size_t, std::size_t>> spans;  // [flat begin, size) per parameter
      for (const auto& v : unit) {
        std::size_t at = total;
        for (auto p : v.params) {
          spans.emplace_back(at, p);
          at += p;
        }
        total += (v.size() + 15) / 16 * 16;
      }
      if (f == 1) {
        for (const auto& s : spans) tensors.push_back(s.second);
        continue;
      }
      const std::size_t shard = (total + f - 1) / f, lo = shard * grid_.fsdp_rank();
      for (const auto& s : spans) {
        const std::size_t a = std::max(s.first, lo), e = std::min(s.first + s.second, lo + shard);
        tensors.push_back(e > a ? e - a : 0);
      }
      // The slice, its gradient and the reduce-scatter's result buffer stay; a gathered unit
      // holds shard x fsdp values, and in its backward as many gradients.
      sharded_storage += 3 * bytes(shard);
      unit_full.push_back(bytes(shard * f));
      unit_full_max = std::max(unit_full_max, bytes(shard * f));
    }
    double storage = 0, moments = 0;
    for (auto n : tensors) {
      r.parameter_elements += n;
      moments += (n + 15) / 16 * 16;
    }
    r.parameter_tensors = tensors.size();
    if (f == 1) {
      for (const auto& unit : units_)
        for (const auto& v : unit) storage += bytes(v.size());
      r.parameter_bytes = r.gradient_bytes = storage;
    } else {
      // Two of the three shard buffers are the values and gradients proper.
      r.parameter_bytes = r.gradient_bytes = sharded_storage / 3;
      // The units are: embeddings, blocks..., norm, head (ChannelViT's order). The most held at
      // once: a block's (or the embeddings') values and gradients in its backward, or the head's
      // values and gradients with the norm's values still gathered (the norm stays gathered
      // from its forward to its backward, which comes after the head's).
      const std::size_t n = unit_full.size();
      const auto& u = unit_full;
      double most = 2 * u[n - 1] + u[n - 2];
      if (!overlap_) {
        for (std::size_t i = 0; i + 2 < n; ++i) most = std::max(most, 2 * u[i]);
      } else {
        // Overlapped (model/encoder.hpp): the embeddings' backward comes after every
        // reduction has finished; a block computes its forward with the next unit (a block or
        // the norm) arriving, and an encoder unit j (norm = n - 2 down to the first block, 1)
        // its backward holding its values and gradients, the block below it arriving and the
        // gradient of the unit above it (j + 1) still being reduce-scattered.
        most = std::max(most, 2 * u[0]);
        for (std::size_t j = 1; j + 2 < n; ++j) most = std::max(most, u[j] + u[j + 1]);
        for (std::size_t j = 1; j + 1 < n; ++j)
          most = std::max(most, 2 * u[j] + (j >= 2 ? u[j - 1] : 0.0) +
                                    (j + 2 < n ? u[j + 1] : 0.0));
      }
      r.transient_bytes = most;
      // Gathers: embeddings and blocks twice (forward, backward), norm and head once;
      // one reduce-scatter per unit.
      for (std::size_t i = 0; i < n; ++i) {
        const double local = unit_full[i] / f;
        r.fsdp_gather_bytes += (i + 2 < n ? 2 : 1) * (f - 1) * local;
        r.fsdp_reduce_scatter_bytes += (f - 1) * local;
      }
    }
    r.optimizer_bytes = 2 * bytes(std::size_t(moments));
    r.activation_bytes = forward_;
    r.backward_bytes = backward_;
    double extra = f > 1 ? sharded_storage / 3 : 0;  // reduce-scatter results
    if (grid_.dp() > 1) {  // GradientSync's packed buffer, all-reduced over dp
      extra += bytes(r.parameter_elements);
      r.dp_all_reduce_bytes = all_reduce(r.parameter_elements, grid_.dp());
    }
    // The loss over the data ranks; the gradient norm's partial sums of squares: two over tp,
    // one over fsdp (train/gradient_sync.hpp); doubles.
    const auto scalar_reduce = [](int p) { return p > 1 ? 2.0 * (p - 1) * 8.0 / p : 0.0; };
    r.scalar_bytes = scalar_reduce(grid_.data_size()) + 2 * scalar_reduce(grid_.tp()) +
                     scalar_reduce(grid_.fsdp());
    // Parameter tables (train/parameter_table.hpp): one tensor entry per parameter and one
    // chunk entry per 4096 elements of each, for the optimizer loop, AdamW and, with more than
    // one data rank, the gradient sync. (On a GPU their host mirrors are host memory.)
    std::size_t chunks = 0;
    for (auto n : tensors) chunks += (n + 4095) / 4096;
    const int tables = grid_.data_size() > 1 ? 3 : 2;
    extra += tables * (double((tensors.size() * sizeof(TableTensor<double>) + 7) / 8 * 8) +
                       double((chunks * sizeof(TableChunk) + 7) / 8 * 8));
    r.persistent_bytes = r.parameter_bytes + r.gradient_bytes + r.optimizer_bytes +
                         r.input_bytes + r.activation_bytes + r.backward_bytes + extra;
    r.peak_bytes = r.persistent_bytes + r.transient_bytes;
    return r;
  }

  std::size_t S_;
  GridShape grid_;
  bool overlap_;

 private:
  std::vector<std::vector<PlanView>> units_;
  double forward_ = 0, backward_ = 0;
};

// QueryCrossAttention over `keys` key tokens of `rows` rows, `heads` of `total_heads` held.
// Storage in visit_storage() order; forward / backward buffers as allocate() and
// allocate_backward() make them, plus its out_proj Linear's output and input gradient.
inline void plan_query_cross_attention(StepPlanner& pl, std::size_t dim, std::size_t heads,
                                       std::size_t total_heads, std::size_t keys,
                                       std::size_t rows, bool input_grad_buffer) {
  const std::size_t hd = dim / total_heads, inner = heads * hd;
  pl.view(dim);                                   // query
  pl.view(3 * inner * dim);                       // in_proj weight
  pl.view(3 * inner);                             // in_proj bias
  pl.view(dim * inner);                           // out_proj weight
  pl.view(dim);                                   // out_proj bias
  pl.forward(inner);                              // q_
  pl.backward(inner);                             // dq_
  if (heads < total_heads) pl.backward(dim);      // partial_query_grad_
  pl.forward(keys * rows * 2 * inner);            // kv_
  pl.forward(rows * heads * keys);                // attn_
  pl.forward(rows * inner);                       // ctx_
  pl.forward(rows * dim);                         // out_proj output
  pl.backward(rows * inner);                      // out_proj dx
  pl.backward(keys * rows * 2 * inner);           // dkv_
  pl.backward(rows * heads * keys);               // dattn_
  pl.backward(std::min<std::size_t>(keys * rows, 256) * inner);  // dq_partial_
  if (input_grad_buffer) pl.backward(keys * rows * dim);         // dx_
}

inline double query_cross_attention_flops(std::size_t dim, std::size_t inner, std::size_t keys,
                                          std::size_t rows) {
  const double kn = double(keys) * rows;
  return 2.0 * kn * dim * 2 * inner + 2.0 * 2.0 * kn * inner + 2.0 * rows * inner * dim;
}

// The partial aggregator of one level: `groups` groups of `group_size` tokens each.
template <class Partial>
struct PartialAggregatorPlan {
  static_assert(sizeof(Partial) == 0,
                "dchag::plan knows the buffers of LinearAggregator and CrossAttentionAggregator "
                "only; a policy with another partial aggregator needs its walk here");
};

template <class T, class E>
struct PartialAggregatorPlan<LinearAggregator<T, E>> {
  // first: the first level, whose input gradient overwrites the channel tokens (no dx_).
  static double walk(StepPlanner& pl, std::size_t groups, std::size_t gs, std::size_t dim,
                     std::size_t /*heads*/, std::size_t rows, bool first) {
    pl.view(groups, gs);                // weight [groups, gs], one parameter per row
    pl.view(groups, 1);                 // bias [groups]
    pl.forward(groups * rows * dim);    // out_
    if (!first) pl.backward(groups * gs * rows * dim);  // dx_
    return 2.0 * groups * gs * double(rows) * dim;
  }
};

template <class T, class E>
struct PartialAggregatorPlan<CrossAttentionAggregator<T, E>> {
  static double walk(StepPlanner& pl, std::size_t groups, std::size_t gs, std::size_t dim,
                     std::size_t heads, std::size_t rows, bool /*first*/) {
    double flops = 0;
    for (std::size_t g = 0; g < groups; ++g) {
      // Each group's attention writes its input gradient into the aggregator's dx_.
      plan_query_cross_attention(pl, dim, heads, heads, gs, rows, false);
      flops += query_cross_attention_flops(dim, dim, gs, rows);
    }
    pl.forward(groups * rows * dim);        // out_
    pl.backward(groups * gs * rows * dim);  // dx_
    return flops;
  }
};

}  // namespace Impl

// The plan of one training step of ChannelViT<T, ExecSpace, Policy> on rank `grid` (its
// coordinates say which rank; the sizes need not exist as MPI ranks) with `batch` samples on this
// rank (the global batch / grid.data_size()). `overlap`: whether model sharding overlaps its
// communication with compute (dchag::set_fsdp_overlap), which keeps the next unit and the last
// unit's gradient whole beside the current one. Throws dchag::Error for a definition or a split the model would refuse.
template <class Policy, class T = float>
StepPlan plan(const ModelConfig& config, const GridShape& grid, int batch,
              bool overlap = fsdp_overlap()) {
  static_assert(Impl::is_detected<Impl::policy_owned_on_t, Policy, GridShape>,
                "dchag::plan: the policy's owned_channels must accept a GridShape (declare it as "
                "template <class Grid> static IndexRange owned_channels(const ChannelLayout&, "
                "const Grid&), reading only grid.tp() and grid.tp_rank())");
  static_assert(std::is_floating_point<T>::value, "dchag::plan: T is the model's scalar type");
  config.validate();
  Impl::require(batch > 0, "dchag::plan: the batch per rank must be positive, got ", batch);
  const int tp = grid.tp();

  // Channel ownership, from the policy, checked as the model checks it: every TP rank owns all
  // channels, or they tile [0, C) in rank order in whole groups of the last partial level.
  const ChannelLayout layout = Impl::channel_layout(config);
  std::vector<IndexRange> owned;
  for (int r = 0; r < tp; ++r) owned.push_back(Policy::owned_channels(layout, grid.at(r)));
  const std::size_t C = std::size_t(config.channels), unit = layout.channels_per_key();
  bool whole = true;
  for (const auto& o : owned) whole = whole && o.begin == 0 && o.end == C;
  if (!whole) {
    std::size_t at = 0;
    for (int r = 0; r < tp; ++r) {
      Impl::require(owned[r].begin == at && owned[r].end > owned[r].begin && owned[r].end <= C,
                    "partitioning policy ", Policy::name(), ": tensor-parallel rank ", r,
                    " owns channels [", owned[r].begin, ", ", owned[r].end,
                    "); the ranks must own consecutive parts of [0, ", C, ") in rank order");
      Impl::require(owned[r].size() % unit == 0, "partitioning policy ", Policy::name(), ": ",
                    owned[r].size(), " channels on tensor-parallel rank ", r,
                    " do not cover whole groups of ", unit, " channels");
      at = owned[r].end;
    }
    Impl::require(at == C, "partitioning policy ", Policy::name(), ": the ranks own [0, ", at,
                  ") of [0, ", C, ")");
  }
  // Then what the stem and the blocks check, in the order the model builds them.
  Impl::require(config.heads % tp == 0, "ChannelViT: heads = ", config.heads,
                " cannot be split evenly over tp = ", tp, " ranks");
  const int hidden_total = static_cast<int>(config.dim * config.mlp_ratio);
  Impl::require(hidden_total % tp == 0, "Block 'blocks.0': the MLP hidden width ", hidden_total,
                " (dim = ", config.dim, " x mlp_ratio = ", config.mlp_ratio,
                ") does not split evenly over the ", tp, " ranks of the tensor-parallel group");
  const IndexRange mine = owned[grid.tp_rank()];
  const bool distributed = !whole;

  Impl::StepPlanner pl(sizeof(T), grid, overlap);
  StepPlan r;
  r.channel_begin = int(mine.begin);
  r.channel_count = int(mine.size());
  const std::size_t B = batch, L = config.patches(), N = B * L, D = config.dim;
  const std::size_t pp = std::size_t(config.patch) * config.patch, Cown = mine.size();
  const std::size_t heads_local = config.heads / tp, hd = D / config.heads;
  const std::size_t inner = heads_local * hd, hidden = hidden_total / tp;
  // The head predicts every input variable it owns (ForecastHead: channels * patch^2 features
  // per token; under D-CHAG this rank's channels only) and selects the output variables among
  // them, unless they are all of them in order.
  const std::size_t predicted = distributed ? Cown : std::size_t(C);
  const std::vector<int> outputs = config.output_indices();
  const std::vector<int> mine_out =
      Impl::outputs_in_channels(outputs, int(mine.begin), int(predicted));
  const std::size_t out = mine_out.size();
  bool select = out != predicted;
  for (std::size_t k = 0; k < out && !select; ++k)
    select = outputs[std::size_t(mine_out[k])] - int(mine.begin) != int(k);
  const std::size_t H = config.height, W = config.width;
  double flops = 0;

  // --- embeddings unit: stem (model/channel_stem.hpp), position, lead time ---
  pl.begin_unit();
  pl.view(Cown, D * pp);  // token_embeds weight [Cown, D, p*p]: one parameter per channel
  pl.view(Cown, D);       // token_embeds bias [Cown, D]
  pl.forward(Cown * N * pp);  // patches_
  pl.forward(Cown * N * D);   // out_
  flops += 2.0 * Cown * double(N) * D * pp;
  pl.view(Cown * D);  // channel embedding rows of the owned channels
  // Partial levels on this rank's tokens: the same bookkeeping as ChannelAggregation.
  {
    std::size_t count = C, t0 = mine.begin, t1 = mine.end;
    for (std::size_t i = 0; i + 1 < config.levels.size(); ++i) {
      const std::size_t gs = count / std::size_t(config.levels[i]);
      count = config.levels[i];
      t0 /= gs;
      t1 /= gs;
      using Partial = typename Policy::template partial<T, Kokkos::DefaultExecutionSpace>;
      flops += Impl::PartialAggregatorPlan<Partial>::walk(pl, t1 - t0, gs, D, config.heads, N,
                                                          i == 0);
    }
    const std::size_t keys = layout.final_keys, own_keys = t1 - t0;
    if (distributed) {
      pl.forward(keys * N * D);  // gathered_group_tokens
      r.dchag_gather_bytes = pl.all_gatherv(keys * N * D, own_keys * N * D);
    }
    Impl::plan_query_cross_attention(pl, D, heads_local, config.heads, keys, N, true);
    flops += Impl::query_cross_attention_flops(D, inner, keys, N);
    pl.forward(N * D);  // aggregated_tokens
    // Forward: the aggregated tokens; backward: the key gradients and the query's partial one.
    r.tp_all_reduce_bytes += pl.all_reduce(N * D, tp);
    if (tp > 1) r.tp_all_reduce_bytes += pl.all_reduce(keys * N * D, tp) + pl.all_reduce(D, tp);
  }
  pl.forward(N * D);  // encoder_input (ChannelViT's x_)
  pl.view(L * D);     // pos_embed
  if (config.lead_time) {
    pl.view(D);  // lead_time_embed weight [D, 1]
    pl.view(D);  // bias
    pl.forward(B * D);
    pl.backward(B * D);  // dembed
    flops += 2.0 * B * D;
  }
  // --- encoder blocks (model/vit_block.hpp) ---
  const bool dropout = config.drop_rate > 0 || config.drop_path_rate > 0;
  for (int b = 0; b < config.depth; ++b) {
    pl.begin_unit();
    const auto norm = [&] {
      pl.view(D);
      pl.view(D);
      pl.forward(N * D);  // out
      pl.forward(N);      // mean
      pl.forward(N);      // rstd
      pl.backward(N * D);  // dx
      flops += 8.0 * N * D;
    };
    norm();  // norm1
    // attention: qkv column-parallel, proj row-parallel (its bias whole)
    pl.view(3 * inner * D);
    pl.view(3 * inner);
    pl.view(D * inner);
    pl.view(D);
    pl.forward(N * 3 * inner);                       // qkv output
    pl.forward(4 * N * inner);                       // q, k, v, context
    pl.forward(B * heads_local * L * L);             // attn
    pl.forward(N * inner);                           // merged
    pl.forward(N * D);                               // proj output
    pl.backward(N * inner);                          // proj dx
    pl.backward(B * heads_local * L * L);            // dattn
    pl.backward(N * inner);                          // dhead
    pl.backward(N * 3 * inner);                      // dqkv
    pl.backward(N * D);                              // qkv dx
    flops += 2.0 * N * D * 3 * inner + 2.0 * N * inner * D +
             2.0 * (2.0 * B * heads_local * L * L * hd);
    norm();  // norm2
    pl.view(hidden * D);
    pl.view(hidden);
    pl.view(D * hidden);
    pl.view(D);
    pl.forward(N * hidden);  // fc1 output
    pl.forward(N * hidden);  // act
    pl.forward(N * D);       // fc2 output
    pl.backward(N * hidden);  // fc2 dx
    pl.backward(N * D);       // fc1 dx
    flops += 4.0 * N * D * hidden;
    pl.forward(2 * N * D);  // residual, out
    pl.backward(N * D);     // dx
    if (dropout) pl.backward(N * D);  // branch_grad
    flops += 2.0 * N * D;
    r.tp_all_reduce_bytes += 4 * pl.all_reduce(N * D, tp);  // two forward, two backward
  }
  // --- encoder norm ---
  pl.begin_unit();
  pl.view(D);
  pl.view(D);
  pl.forward(N * D + 2 * N);
  pl.backward(N * D);
  flops += 8.0 * N * D;
  // --- head (model/forecast_head.hpp) ---
  pl.begin_unit();
  for (int i = 0; i < config.decoder_depth; ++i) {
    pl.view(D * D);
    pl.view(D);
    pl.forward(2 * N * D);  // Linear output, GELU
    pl.backward(N * D);     // dx
    flops += 2.0 * N * D * D;
  }
  pl.view(predicted * pp * D);
  pl.view(predicted * pp);
  if (select) pl.forward_raw((out + predicted) * sizeof(int));  // output ids, slots
  pl.forward(N * predicted * pp);         // Linear output
  pl.forward(B * predicted * H * W);      // prediction of every variable
  if (select) pl.forward(B * out * H * W);  // the selected outputs
  pl.backward(N * predicted * pp);        // head.dy
  if (select) pl.backward(B * predicted * H * W);  // head.dprediction (scattered)
  pl.backward(N * D);                     // dx
  if (distributed) r.tp_all_reduce_bytes += pl.all_reduce(N * D, tp);  // dx, summed over TP
  flops += 2.0 * N * D * predicted * pp;
  // --- the trainer: the prediction's gradient; the step's inputs ---
  pl.backward(B * out * H * W);  // dprediction
  r.input_bytes = pl.bytes(B * Cown * H * W) + pl.bytes(B * out * H * W) + pl.bytes(B) +
                  pl.bytes(H);
  r.forward_flops = flops;
  StepPlan done = pl.finish(r);
  // The loss of a prediction split by channel: its parts summed over TP (one double).
  if (distributed && tp > 1) done.scalar_bytes += 2.0 * (tp - 1) * 8.0 / tp;
  return done;
}

}  // namespace dchag

#endif
