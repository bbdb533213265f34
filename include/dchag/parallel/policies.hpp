#ifndef DCHAG_PARALLEL_POLICIES_HPP
#define DCHAG_PARALLEL_POLICIES_HPP

// The library's two partitioning policies (models of the concept in policy.hpp), chosen at
// compile time as ChannelViT's policy parameter. Both split the final channel aggregator and
// every encoder block over the tensor-parallel group; they differ in where the per-channel work
// happens:
//   ReplicatedChannels<Partial>  every TP rank tokenizes all C channels and runs the partial
//                                aggregation levels on all of them (TensorParallel: the ClimaX
//                                baseline when the levels are {1});
//   DistributedChannels<Partial> D-CHAG: rank r tokenizes and partially aggregates only its
//                                own channels, then the group tokens are all-gathered over TP.
// `Partial` is the partial aggregator of the non-final levels (LinearAggregator: D-CHAG-L,
// CrossAttentionAggregator: D-CHAG-C, or any model of aggregation/aggregator.hpp).

#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/parallel/policy.hpp>
#include <dchag/parallel/process_grid.hpp>

namespace dchag {

template <template <class, class> class Partial = LinearAggregator>
struct ReplicatedChannels {
  template <class T, class ExecSpace>
  using partial = Partial<T, ExecSpace>;
  // Grid: a ProcessGrid, or anything with tp() and tp_rank() (the planner's GridShape).
  template <class Grid>
  static IndexRange owned_channels(const ChannelLayout& layout, const Grid&) {
    return {0, std::size_t(layout.channels)};
  }
  static const char* name() { return "tensor-parallel (channels replicated)"; }
};

template <template <class, class> class Partial = LinearAggregator>
struct DistributedChannels {
  template <class T, class ExecSpace>
  using partial = Partial<T, ExecSpace>;
  // Equal consecutive parts; one that would not cover whole groups is refused by the model.
  template <class Grid>
  static IndexRange owned_channels(const ChannelLayout& layout, const Grid& grid) {
    Impl::require(layout.channels % grid.tp() == 0, "ChannelViT: ", layout.channels,
                  " channels cannot be split evenly over tp = ", grid.tp(), " ranks");
    return even_range(std::size_t(layout.channels), grid.tp(), grid.tp_rank());
  }
  static const char* name() { return "D-CHAG (channels distributed)"; }
};

using TensorParallel = ReplicatedChannels<LinearAggregator>;

}  // namespace dchag

#endif
