#ifndef DCHAG_MODEL_CHANNEL_STEM_HPP
#define DCHAG_MODEL_CHANNEL_STEM_HPP

// The many-channel front of the model, partitioned by the policy (parallel/policy.hpp):
//   per-channel patch embedding + channel embedding -> partial aggregation levels
//   -> [D-CHAG: all-gather of the group tokens over TP] -> final cross-attention (heads split
//   over TP, out_proj row-parallel: all-reduce, then bias) -> one token per patch [B*L, D].
// Both heads of the library (forecasting, masked autoencoding) start with it.

#include <cstdint>
#include <string>
#include <vector>

#include <dchag/aggregation/hierarchy.hpp>
#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/layers/patch_embed.hpp>
#include <dchag/model/config.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/policies.hpp>
#include <dchag/parallel/policy.hpp>
#include <dchag/parallel/process_grid.hpp>

namespace dchag {

namespace Impl {
inline ChannelLayout channel_layout(const ModelConfig& c) {
  const int keys = c.levels.size() > 1 ? c.levels[c.levels.size() - 2] : c.channels;
  return {c.channels, keys};
}

inline AggregationShard aggregation_shard(const ModelConfig& c, const ProcessGrid& grid,
                                          IndexRange channels) {
  require(c.heads % grid.tp() == 0, "ChannelViT: heads = ", c.heads,
          " cannot be split evenly over tp = ", grid.tp(), " ranks");
  const int h = c.heads / grid.tp();
  return {int(channels.begin), int(channels.size()), grid.tp_rank() * h, h, true};
}
}  // namespace Impl

template <class T, class ExecSpace, class Policy>
class ChannelStem {
  static_assert(Impl::check_partitioning_policy<Policy, T, ExecSpace>(),
                "ChannelViT / ChannelMAE: the Policy parameter does not model the concept");

 public:
  using image = View4<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;
  using tensor = View3<T, ExecSpace>;

  ChannelStem() = default;
  // config must be validated; grid is the model's.
  ChannelStem(const ModelConfig& config, const ProcessGrid& grid)
      : config_(config),
        grid_(grid),
        ranges_(Impl::tp_channel_ranges<Policy>(Impl::channel_layout(config), grid)),
        channels_(ranges_[std::size_t(grid.tp_rank())]),
        embed_("token_embeds", int(channels_.size()), config.patch, config.dim,
               int(channels_.begin)),
        var_embed_(int(channels_.size()), config.dim, int(channels_.begin)),
        aggregation_(config.channels, config.dim, config.heads, config.levels,
                     Impl::aggregation_shard(config, grid, channels_)) {}

  void init(std::uint64_t seed) {
    embed_.init(seed);
    var_embed_.init(seed);
    aggregation_.init(seed);
  }

  // x [B, channel_count(), H, W] -> aggregated tokens [B*L, D] (replicated on the TP ranks).
  matrix forward(const ExecSpace& space, const image& x) {
    Impl::require(x.extent(0) > 0 && x.extent(1) == channels_.size() &&
                      x.extent(2) == std::size_t(config_.height) &&
                      x.extent(3) == std::size_t(config_.width),
                  "ChannelViT: input ", Impl::shape_of(x), " must be [B, ", channels_.size(),
                  ", ", config_.height, ", ", config_.width, "] (channels [", channels_.begin,
                  ", ", channels_.end, ") of ", config_.channels, " on this rank)");
    auto tokens = embed_.forward(space, x);  // [owned channels, B*L, D]
    var_embed_.forward(space, tokens);
    auto part = aggregation_.partial_forward(space, tokens);  // [owned group tokens, B*L, D]
    auto agg = aggregation_.final_forward(space, gather_groups(space, part));
    if (out_.extent(0) != agg.extent(0)) out_ = matrix("aggregated_tokens", agg.extent(0), agg.extent(1));
    Kokkos::deep_copy(space, out_, agg);
    all_reduce_sum(space, grid_.tp_comm(), out_);
    aggregation_.final_aggregator().add_output_bias(space, out_);
    return out_;
  }

  // Accumulates the stem's parameter gradients from dL/d(aggregated tokens).
  void backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& d) {
    // The tokens (the patch embedding's output, channel embedding added in place) are dead once
    // the first partial level has read them for its weight gradient: a level that can writes
    // dL/dtokens over them, which saves the stem's largest buffer, [owned channels, B*L, D].
    const auto& tokens = embed_.output();
    auto dtokens = aggregation_.partial_backward(
        space, aggregation_backward(space, d), true,
        Unmanaged<T***, ExecSpace>(tokens.data(), tokens.extent(0), tokens.extent(1),
                                   tokens.extent(2)));
    var_embed_.backward(space, dtokens);
    embed_.backward(space, dtokens);
    // The final query's gradient, summed over TP behind the backward above (nothing reads it).
    if (grid_.tp() > 1) {
      query_sum_.wait();
      aggregation_.final_aggregator().accumulate_query_grad(space);
    }
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    embed_.visit_storage(f);
    var_embed_.visit_storage(f);
    aggregation_.visit_storage(f);
  }

  // When the channels are distributed (D-CHAG) the per-channel parameters (patch embeddings,
  // channel-embedding rows, partial aggregators) are owned by one TP rank each and marked
  // partitioned.
  void parameters(ParameterList<T, ExecSpace>& list) const {
    ParameterList<T, ExecSpace> owned;
    embed_.parameters(owned);
    var_embed_.parameters(owned);
    for (int i = 0; i < aggregation_.partial_levels(); ++i) aggregation_.partial(i).parameters(owned);
    if (distributed()) mark_channel_owned(owned);
    list.insert(list.end(), owned.begin(), owned.end());
    aggregation_.final_aggregator().parameters(list);
  }

  double flops(std::size_t rows) const { return embed_.flops(rows) + aggregation_.flops(rows); }

  int channel_begin() const { return int(channels_.begin); }
  int channel_count() const { return int(channels_.size()); }
  // Every TP rank's channels, in rank order.
  const std::vector<IndexRange>& channel_ranges() const { return ranges_; }
  // Whether the policy gave this rank part of the channels (then every TP rank has a part:
  // Impl::owned_channels checked it).
  bool distributed() const { return channels_.size() < std::size_t(config_.channels); }

 private:

  void mark_channel_owned(ParameterList<T, ExecSpace>& list) const {
    for (auto& p : list) {
      p.partitioned = true;
      if (p.name != var_embed_.name()) continue;  // owned whole
      p.pieces = {LogicalBox{{0, channels_.begin, 0}, p.shape}};
      p.shape[1] = std::size_t(config_.channels);
    }
  }

  // D-CHAG's all-gather of the group tokens over TP (channel-major, so each rank's block is
  // contiguous; ranks may own different numbers of groups, so it gathers each rank's own
  // count); the input itself when every rank holds all of them. Blocking: nothing in the
  // forward is independent of it (the partial levels before it produce what it sends, the
  // final cross-attention after it reads every rank's keys), and the same holds for the
  // all-reduce of the final aggregator's partial output that follows.
  Unmanaged<const T***, ExecSpace> gather_groups(const ExecSpace& space,
                                                 const Unmanaged<const T***, ExecSpace>& part) {
    if (!distributed()) return part;
    const std::size_t keys = aggregation_.final_keys();
    if (gathered_.extent(0) != keys || gathered_.extent(1) != part.extent(1))
      gathered_ = tensor("gathered_group_tokens", keys, part.extent(1), part.extent(2));
    const std::size_t unit = std::size_t(Impl::channel_layout(config_).channels_per_key());
    std::vector<std::size_t> counts;
    for (const auto& r : ranges_) counts.push_back(r.size() / unit);
    all_gatherv(space, grid_.tp_comm(), part, gathered_, counts);
    return gathered_;
  }

  // Backward of the final aggregator and of the gather. The gradient with respect to the group
  // tokens is a partial sum over this rank's heads: all-reduce it (B*L*G*D values; the baseline
  // moves B*L*C*D). The gather's backward then keeps this rank's own slice, no communication.
  // The query is replicated but each rank's heads see only part of it: the final aggregator
  // keeps this backward's share apart, to be summed over TP before it is accumulated: that sum
  // is the one collective here with independent work after it (the partial levels' and the
  // embeddings' backward), so it is issued non-blocking and completed at the end of backward();
  // the key gradient's all-reduce stays blocking, the partial backward needs it at once.
  Unmanaged<const T***, ExecSpace> aggregation_backward(const ExecSpace& space,
                                                        const ConstMatrix<T, ExecSpace>& d) {
    const auto dkeys = aggregation_.final_backward(space, d);
    if (grid_.tp() == 1) return dkeys;
    const Unmanaged<T***, ExecSpace> dk(const_cast<T*>(dkeys.data()), dkeys.extent(0),
                                        dkeys.extent(1), dkeys.extent(2));
    query_sum_ = start_all_reduce_sum(space, grid_.tp_comm(),
                                      aggregation_.final_aggregator().partial_query_grad());
    all_reduce_sum(space, grid_.tp_comm(), dk);
    if (!distributed()) return dkeys;
    const int last = aggregation_.partial_levels();
    const std::size_t b = aggregation_.token_begin(last), n = aggregation_.token_count(last);
    return Kokkos::subview(dkeys, Kokkos::make_pair(b, b + n), Kokkos::ALL, Kokkos::ALL);
  }

  ModelConfig config_;
  ProcessGrid grid_;
  std::vector<IndexRange> ranges_;  // every TP rank's channels, in rank order
  IndexRange channels_;              // this rank's
  ChannelPatchEmbed<T, ExecSpace> embed_;
  ChannelEmbedding<T, ExecSpace> var_embed_;
  ChannelAggregation<T, ExecSpace, Policy::template partial> aggregation_;
  matrix out_;
  tensor gathered_;
  CommRequest query_sum_;  // the query gradient's sum over TP, in flight during backward()
};

}  // namespace dchag

#endif
