#ifndef DCHAG_PARALLEL_POLICY_HPP
#define DCHAG_PARALLEL_POLICY_HPP

// The partitioning-policy concept: ChannelViT's and ChannelMAE's Policy parameter. The library's
// policies (ReplicatedChannels, DistributedChannels: policies.hpp) model it; so may a user's
// type, with no change to any library header.
//
// The final channel aggregator and the encoder are split over the tensor-parallel group the same
// way under every policy (Megatron: heads and hidden units). What a policy decides is where the
// per-channel work happens, by one function: which input channels each tensor-parallel rank
// tokenizes. Everything else follows from it in the model (model/channel_stem.hpp), so that a
// policy cannot be inconsistent with itself:
//  - a rank that owns every channel runs the whole hierarchy on them; its per-channel
//    parameters are replicated over TP and, since every TP rank sees the same inputs, so are
//    their gradients: nothing is reduced and gradient clipping counts them once;
//  - ranks that own a part each (the parts must tile [0, C) in tensor-parallel rank order,
//    each a non-empty run of whole groups of the last partial level; the sizes may differ)
//    run the partial levels on their channels, all-gather the group tokens over TP (with each
//    rank's own count) for the final aggregator, and keep only their slice of its input
//    gradient; their per-channel parameters are partitioned (one owner each). A group is never
//    shared between ranks: partial aggregators need not be decomposable (cross-attention is
//    not), and each group's parameters keep one owner. A policy that cannot give every rank
//    a group must give every rank all channels instead.
//
// A model P of PartitioningPolicy:
//   template <class T, class ExecSpace> using partial = ...;
//       the partial aggregator of the non-final levels, a model of PartialAggregator
//       (aggregation/aggregator.hpp).
//   static IndexRange owned_channels(const ChannelLayout&, const ProcessGrid&)
//       the input channels [begin, end) that grid.tp_rank() tokenizes; either all of them on
//       every TP rank, or a tiling as above. May throw (a split that cannot be made): every rank
//       then gets the error.
//   static const char* name()
//       for logs, checkpoints ("policy", information only) and the configuration check between
//       ranks.
//
// is_partitioning_policy<P, T, ExecSpace> says whether P has all of it;
// Impl::check_partitioning_policy<P, T, ExecSpace>() names each missing member.

#include <mpi.h>

#include <string>
#include <utility>
#include <vector>

#include <dchag/aggregation/aggregator.hpp>
#include <dchag/core/detection.hpp>
#include <dchag/core/error.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/parallel/process_grid.hpp>

namespace dchag {

// What a policy decides from: the model's channels and how coarsely the aggregation tree lets
// them be cut.
struct ChannelLayout {
  int channels = 0;    // C
  int final_keys = 0;  // tokens the final aggregator attends over (C when levels = {1})
  // Channels behind one input token of the final aggregator: a rank's channels must be whole
  // multiples of it (whole groups at every partial level).
  int channels_per_key() const { return channels / final_keys; }
};

namespace Impl {

template <class P, class T, class E>
using policy_partial_t = typename P::template partial<T, E>;
template <class P>
using policy_owned_t = decltype(P::owned_channels(std::declval<const ChannelLayout&>(),
                                                  std::declval<const ProcessGrid&>()));
template <class P>
using policy_name_t = decltype(P::name());

template <class P, class T, class E>
constexpr bool policy_has_partial() {
  if constexpr (is_detected<policy_partial_t, P, T, E>)
    return is_partial_aggregator<policy_partial_t<P, T, E>, T, E>::value;
  else
    return false;
}

template <class P, class T, class E>
struct PolicyMembers {
  static constexpr bool partial = policy_has_partial<P, T, E>();
  static constexpr bool owned_channels = is_detected_convertible<IndexRange, policy_owned_t, P>();
  static constexpr bool name = is_detected_convertible<std::string, policy_name_t, P>();
  static constexpr bool all = partial && owned_channels && name;
};

}  // namespace Impl

template <class P, class T, class ExecSpace>
struct is_partitioning_policy
    : std::integral_constant<bool, Impl::PolicyMembers<P, T, ExecSpace>::all> {};

namespace Impl {

template <class P, class T, class E>
constexpr bool check_partitioning_policy() {
  using M = PolicyMembers<P, T, E>;
  static_assert(M::partial, "dchag partitioning policy (parallel/policy.hpp): no member template "
                            "`partial<T, ExecSpace>` naming a partial aggregator "
                            "(aggregation/aggregator.hpp)");
  static_assert(M::owned_channels, "dchag partitioning policy (parallel/policy.hpp): no "
                                   "static IndexRange owned_channels(const ChannelLayout&, "
                                   "const ProcessGrid&)");
  static_assert(M::name, "dchag partitioning policy (parallel/policy.hpp): no "
                         "static const char* name()");
  return M::all;
}

// Collective over grid.world(): the policy's choice on every rank, checked to be one of the two
// shapes the model can run (every TP rank owns all channels, or they tile them in rank order in
// non-empty runs of whole keys). A policy that throws on some ranks only, or chooses a shape
// that does not fit, gets the same error on every rank. Returns every TP rank's range, in rank
// order (the counts of the group-token gather).
template <class Policy>
std::vector<IndexRange> tp_channel_ranges(const ChannelLayout& layout, const ProcessGrid& grid) {
  IndexRange mine{0, 0};
  on_every_rank(grid.world(), [&] { mine = Policy::owned_channels(layout, grid); });
  const int tp = grid.tp();
  std::vector<long long> all(2 * std::size_t(tp));
  const long long pair[2] = {static_cast<long long>(mine.begin),
                             static_cast<long long>(mine.end)};
  check_mpi(MPI_Allgather(pair, 2, MPI_LONG_LONG, all.data(), 2, MPI_LONG_LONG,
                          grid.tp_comm().get()),
            "MPI_Allgather", "owned_channels");
  on_every_rank(grid.world(), [&] {
    const long long C = layout.channels, unit = layout.channels_per_key();
    const auto range = [&](int r) {
      return concat("[", all[2 * r], ", ", all[2 * r + 1], ")");
    };
    std::string ranges;
    for (int r = 0; r < tp; ++r) ranges += (r ? " " : "") + range(r);
    bool whole = true, tiled = true;
    for (int r = 0; r < tp; ++r) {
      const long long b = all[2 * r], e = all[2 * r + 1];
      require(0 <= b && b < e && e <= C, "partitioning policy ", Policy::name(),
              ": tensor-parallel rank ", r, " owns channels ", range(r),
              ", not a non-empty part of [0, ", C, ")");
      whole = whole && b == 0 && e == C;
      tiled = tiled && b == (r == 0 ? 0 : all[2 * r - 1]) && (r + 1 < tp || e == C);
    }
    if (whole) return;
    require(tiled, "partitioning policy ", Policy::name(), ": the ", tp,
            " tensor-parallel ranks own channels ", ranges, "; they must either all own [0, ", C,
            ") or own consecutive parts of it in rank order that together cover it");
    for (int r = 0; r < tp; ++r)
      require(all[2 * r] % unit == 0 && all[2 * r + 1] % unit == 0, "partitioning policy ",
              Policy::name(), ": tensor-parallel rank ", r, " owns channels ", range(r),
              ", which do not cover whole groups of ", unit,
              " channels (the groups of the last partial aggregation level); each rank must "
              "own whole groups");
  });
  std::vector<IndexRange> out(static_cast<std::size_t>(tp));
  for (int r = 0; r < tp; ++r)
    out[std::size_t(r)] = {std::size_t(all[2 * r]), std::size_t(all[2 * r + 1])};
  return out;
}

// This rank's part of tp_channel_ranges (collective likewise).
template <class Policy>
IndexRange owned_channels(const ChannelLayout& layout, const ProcessGrid& grid) {
  return tp_channel_ranges<Policy>(layout, grid)[std::size_t(grid.tp_rank())];
}

}  // namespace Impl
}  // namespace dchag

#endif
