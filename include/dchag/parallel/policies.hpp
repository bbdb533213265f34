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
//                                own channels (whole groups, as evenly as whole groups
//                                allow), then the group tokens are all-gathered over TP.
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
  // Whole keys of the final aggregator (groups of the last partial level; single channels when
  // levels = {1}) spread over the TP ranks in rank order, the first K % tp ranks taking one key
  // more: any C on any tp, e.g. 7 channels, levels {1}, on 4 ranks -> 2, 2, 2, 1 channels;
  // levels {5, 1} with 30 channels on 4 ranks -> 2, 1, 1, 1 groups of 6. A group is never split
  // between ranks, so every partial aggregator runs whole on one rank and nothing but the
  // gather of the group tokens crosses ranks. With fewer keys than ranks (levels {3, 1} on 4
  // ranks) some rank would own nothing: then every rank owns every channel, as under
  // ReplicatedChannels (the same result, none of the memory saving; a tree with at least tp
  // groups in its last partial level distributes).
  template <class Grid>
  static IndexRange owned_channels(const ChannelLayout& layout, const Grid& grid) {
    const int keys = layout.final_keys, unit = layout.channels_per_key();
    if (keys < grid.tp()) return {0, std::size_t(layout.channels)};
    const IndexRange mine = balanced_range(std::size_t(keys), grid.tp(), grid.tp_rank());
    return {mine.begin * unit, mine.end * unit};
  }
  static const char* name() { return "D-CHAG (channels distributed)"; }
};

using TensorParallel = ReplicatedChannels<LinearAggregator>;

}  // namespace dchag

#endif
