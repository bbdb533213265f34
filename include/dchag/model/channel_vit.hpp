#ifndef DCHAG_MODEL_CHANNEL_VIT_HPP
#define DCHAG_MODEL_CHANNEL_VIT_HPP

// The channel vision transformer for forecasting (ClimaX), partitioned over a process grid by
// a policy parameter (parallel/policies.hpp):
//   tokenize (one patch embedding per channel) + channel embedding -> partial aggregation
//   -> [D-CHAG: all-gather group tokens over TP] -> final cross-attention (heads split over TP)
//   -> + position (+ lead-time) embedding -> encoder (Megatron over TP) -> forecast head.
// One rank is a grid of 1 x 1 x 1; there is no separate serial path. The model definition
// (ModelConfig) never depends on the grid, so every grid computes the same function from the
// same initial weights.

#include <cstdint>
#include <string>

#include <dchag/aggregation/hierarchy.hpp>
#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/layers/patch_embed.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/model/forecast_head.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/policies.hpp>
#include <dchag/parallel/process_grid.hpp>

namespace dchag {

namespace Impl {
// The input channels a rank tokenizes: its even share under D-CHAG, all of them otherwise.
template <class Policy>
IndexRange owned_channels(const ModelConfig& c, const ProcessGrid& grid) {
  if (!Policy::distributed_channels) return {0, std::size_t(c.channels)};
  require(c.channels % grid.tp() == 0, "ChannelViT: ", c.channels,
          " channels cannot be split evenly over tp = ", grid.tp(), " ranks");
  return even_range(std::size_t(c.channels), grid.tp(), grid.tp_rank());
}

inline AggregationShard aggregation_shard(const ModelConfig& c, const ProcessGrid& grid,
                                          IndexRange channels) {
  require(c.heads % grid.tp() == 0, "ChannelViT: heads = ", c.heads,
          " cannot be split evenly over tp = ", grid.tp(), " ranks");
  const int h = c.heads / grid.tp();
  return {int(channels.begin), int(channels.size()), grid.tp_rank() * h, h, true};
}
}  // namespace Impl

template <class T, class ExecSpace, class Policy = DistributedChannels<LinearAggregator>>
class ChannelViT {
 public:
  using scalar = T;
  using execution_space = ExecSpace;
  using policy = Policy;
  using image = View4<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;
  using tensor = View3<T, ExecSpace>;

  explicit ChannelViT(const ModelConfig& config, const ProcessGrid& grid = ProcessGrid::single())
      : config_(validated(config, grid)),
        grid_(grid),
        channels_(Impl::owned_channels<Policy>(config, grid)),
        embed_("token_embeds", int(channels_.size()), config.patch, config.dim,
               int(channels_.begin)),
        var_embed_(int(channels_.size()), config.dim, int(channels_.begin)),
        aggregation_(config.channels, config.dim, config.heads, config.levels,
                     Impl::aggregation_shard(config, grid, channels_)),
        pos_embed_(config.patches(), config.dim, config.grid_h(), config.grid_w()),
        encoder_(config.dim, config.depth, config.heads, double(config.mlp_ratio), "", 1e-5,
                 grid.tp_comm()),
        head_(config.dim, config.out_channels, config.patch, config.decoder_depth) {
    if (config_.lead_time) lead_embed_ = LeadTimeEmbedding<T, ExecSpace>(config.dim);
    init();
  }

  // Every parameter's initial value depends only on (seed, its name): see core/parameter.hpp.
  void init() {
    const std::uint64_t s = config_.seed;
    embed_.init(s);
    var_embed_.init(s);
    aggregation_.init(s);
    pos_embed_.init(s);
    if (config_.lead_time) lead_embed_.init(s);
    encoder_.init(s);
    head_.init(s);
  }

  // x [B, C, H, W] at time t, lead_times [B] -> prediction [B, C_out, H, W]
  image forward(const ExecSpace& space, const image& x, const View1<T, ExecSpace>& lead_times) {
    check_input(x, lead_times);
    batch_ = static_cast<int>(x.extent(0));
    const int L = config_.patches();
    auto tokens = embed_.forward(space, x);  // [owned channels, B*L, D]
    var_embed_.forward(space, tokens);
    auto part = aggregation_.partial_forward(space, tokens);  // [owned group tokens, B*L, D]
    auto agg = aggregation_.final_forward(space, gather_groups(space, part));
    if (x_.extent(0) != agg.extent(0)) x_ = matrix("encoder_input", agg.extent(0), agg.extent(1));
    Kokkos::deep_copy(space, x_, agg);
    // The final aggregator's out_proj is row-parallel: sum the heads' parts, then add the bias.
    all_reduce_sum(space, grid_.tp_comm(), x_);
    aggregation_.final_aggregator().add_output_bias(space, x_);
    pos_embed_.forward(space, x_);
    if (config_.lead_time) lead_embed_.forward(space, x_, lead_times);
    auto encoded = encoder_.forward(space, x_, batch_, L);
    return head_.forward(space, encoded, batch_, config_.height, config_.width);
  }

  // Accumulates every parameter's gradient from dL/dprediction.
  void backward(const ExecSpace& space, const image& dpred) {
    Impl::require(batch_ > 0, "ChannelViT: backward() called before forward()");
    auto d = head_.backward(space, dpred);
    d = encoder_.backward(space, d);
    if (config_.lead_time) lead_embed_.backward(space, d);
    pos_embed_.backward(space, d);
    auto dtokens = aggregation_.partial_backward(space, aggregation_backward(space, d));
    var_embed_.backward(space, dtokens);
    embed_.backward(space, dtokens);
  }

  // Every parameter this rank holds, under its logical name and shape. Under D-CHAG the
  // per-channel parameters (patch embeddings, channel-embedding rows, partial aggregators) are
  // owned by one TP rank each and marked partitioned.
  ParameterList<T, ExecSpace> parameters() const {
    ParameterList<T, ExecSpace> list;
    embed_.parameters(list);
    var_embed_.parameters(list);
    for (int i = 0; i < aggregation_.partial_levels(); ++i) aggregation_.partial(i).parameters(list);
    if (Policy::distributed_channels && grid_.tp() > 1) mark_channel_owned(list);
    aggregation_.final_aggregator().parameters(list);
    pos_embed_.parameters(list);
    if (config_.lead_time) lead_embed_.parameters(list);
    encoder_.parameters(list);
    head_.parameters(list);
    return list;
  }

  // Multiply-add FLOPs x2 of one forward pass on `batch` samples (backward is about twice this).
  double forward_flops(std::size_t batch) const {
    const std::size_t L = config_.patches(), rows = batch * L;
    return embed_.flops(rows) + aggregation_.flops(rows) +
           (config_.lead_time ? lead_embed_.flops(batch) : 0.0) + encoder_.flops(batch, L) +
           head_.flops(rows);
  }

  const ModelConfig& config() const { return config_; }
  const ProcessGrid& grid() const { return grid_; }
  // The input channels this rank reads: x passed to forward() is [B, channel_count(), H, W]
  // holding global channels [channel_begin(), channel_begin() + channel_count()).
  int channel_begin() const { return int(channels_.begin); }
  int channel_count() const { return int(channels_.size()); }

 private:
  // Validates the definition and checks, on every rank at once, that all ranks were given the
  // same one: a rank that disagreed would otherwise hang in the first collective.
  static const ModelConfig& validated(const ModelConfig& c, const ProcessGrid& grid) {
    c.validate();
    Impl::require(grid.fsdp() == 1, "ChannelViT: model sharding (fsdp = ", grid.fsdp(),
                  ") is not implemented; use fsdp = 1 with tp and dp");
    check_agreement(grid.world(), "ChannelViT configuration",
                    c.describe() + " seed=" + std::to_string(c.seed) + " policy=" +
                        Policy::name() + " grid=" + grid.describe());
    return c;
  }

  void check_input(const image& x, const View1<T, ExecSpace>& lead) const {
    const ModelConfig& c = config_;
    Impl::require(x.extent(0) > 0 && x.extent(1) == channels_.size() &&
                      x.extent(2) == std::size_t(c.height) && x.extent(3) == std::size_t(c.width),
                  "ChannelViT: input ", Impl::shape_of(x), " must be [B, ", channels_.size(),
                  ", ", c.height, ", ", c.width, "] (channels [", channels_.begin, ", ",
                  channels_.end, ") of ", c.channels, " on this rank)");
    Impl::require(!c.lead_time || lead.extent(0) == x.extent(0), "ChannelViT: lead times ",
                  Impl::shape_of(lead), " must have one entry per sample (", x.extent(0), ")");
  }

  void mark_channel_owned(ParameterList<T, ExecSpace>& list) const {
    for (auto& p : list) {
      p.partitioned = true;
      if (p.name != var_embed_.name()) continue;  // owned whole
      p.pieces = {LogicalBox{{0, channels_.begin, 0}, p.shape}};
      p.shape[1] = std::size_t(config_.channels);
    }
  }

  // D-CHAG's all-gather of the group tokens over TP (channel-major, so each rank's block is
  // contiguous); the input itself when every rank holds all of them.
  Unmanaged<const T***, ExecSpace> gather_groups(const ExecSpace& space,
                                                 const Unmanaged<const T***, ExecSpace>& part) {
    if (!Policy::distributed_channels || grid_.tp() == 1) return part;
    const std::size_t keys = aggregation_.final_keys();
    if (gathered_.extent(0) != keys || gathered_.extent(1) != part.extent(1))
      gathered_ = tensor("gathered_group_tokens", keys, part.extent(1), part.extent(2));
    all_gather(space, grid_.tp_comm(), part, gathered_);
    return gathered_;
  }

  // Backward of the final aggregator and of the gather. The gradient with respect to the group
  // tokens is a partial sum over this rank's heads: all-reduce it (B*L*G*D values; the baseline
  // moves B*L*C*D). The gather's backward then keeps this rank's own slice, no communication.
  // The query is replicated but each rank's heads see only part of it: its gradient is summed
  // over TP too, counting only this backward's contribution so that accumulation still works.
  Unmanaged<const T***, ExecSpace> aggregation_backward(const ExecSpace& space,
                                                        const ConstMatrix<T, ExecSpace>& d) {
    const auto& fin = aggregation_.final_aggregator();
    const auto gq = fin.grad_query();
    if (query_grad_before_.extent(0) != gq.extent(0))
      query_grad_before_ = View1<T, ExecSpace>("query_grad_before", gq.extent(0));
    if (grid_.tp() > 1) Kokkos::deep_copy(space, query_grad_before_, gq);
    const auto dkeys = aggregation_.final_backward(space, d);
    if (grid_.tp() == 1) return dkeys;
    const Unmanaged<T***, ExecSpace> dk(const_cast<T*>(dkeys.data()), dkeys.extent(0),
                                        dkeys.extent(1), dkeys.extent(2));
    all_reduce_sum(space, grid_.tp_comm(), dk);
    add_scaled(space, gq, T(-1), query_grad_before_);
    all_reduce_sum(space, grid_.tp_comm(), gq);
    add_scaled(space, gq, T(1), query_grad_before_);
    if (!Policy::distributed_channels) return dkeys;
    const int last = aggregation_.partial_levels();
    const std::size_t b = aggregation_.token_begin(last), n = aggregation_.token_count(last);
    return Kokkos::subview(dkeys, Kokkos::make_pair(b, b + n), Kokkos::ALL, Kokkos::ALL);
  }

  ModelConfig config_;
  ProcessGrid grid_;
  IndexRange channels_;
  ChannelPatchEmbed<T, ExecSpace> embed_;
  ChannelEmbedding<T, ExecSpace> var_embed_;
  ChannelAggregation<T, ExecSpace, Policy::template partial> aggregation_;
  PositionEmbedding<T, ExecSpace> pos_embed_;
  LeadTimeEmbedding<T, ExecSpace> lead_embed_;
  Encoder<T, ExecSpace> encoder_;
  ForecastHead<T, ExecSpace> head_;
  matrix x_;
  tensor gathered_;
  View1<T, ExecSpace> query_grad_before_;
  int batch_ = 0;
};

}  // namespace dchag

#endif
