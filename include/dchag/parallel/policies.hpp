#ifndef DCHAG_PARALLEL_POLICIES_HPP
#define DCHAG_PARALLEL_POLICIES_HPP

// The model-parallel partitioning, chosen at compile time as ChannelViT's policy parameter.
// Both policies split the final channel aggregator and every encoder block over the
// tensor-parallel group (Megatron: heads and MLP hidden units); they differ in where the
// per-channel work happens:
//   ReplicatedChannels<Partial>  every TP rank tokenizes all C channels and runs the partial
//                                aggregation levels on all of them (TensorParallel: the ClimaX
//                                baseline when the levels are {1});
//   DistributedChannels<Partial> D-CHAG: rank r tokenizes and partially aggregates only its
//                                own channels, then the group tokens are all-gathered over TP.
// `Partial` is the partial aggregator of the non-final levels (LinearAggregator: D-CHAG-L,
// CrossAttentionAggregator: D-CHAG-C).

#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>

namespace dchag {

template <template <class, class> class Partial = LinearAggregator>
struct ReplicatedChannels {
  template <class T, class ExecSpace>
  using partial = Partial<T, ExecSpace>;
  static constexpr bool distributed_channels = false;
  static const char* name() { return "tensor-parallel (channels replicated)"; }
};

template <template <class, class> class Partial = LinearAggregator>
struct DistributedChannels {
  template <class T, class ExecSpace>
  using partial = Partial<T, ExecSpace>;
  static constexpr bool distributed_channels = true;
  static const char* name() { return "D-CHAG (channels distributed)"; }
};

using TensorParallel = ReplicatedChannels<LinearAggregator>;

}  // namespace dchag

#endif
