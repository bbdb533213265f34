#ifndef DCHAG_AGGREGATION_AGGREGATOR_HPP
#define DCHAG_AGGREGATION_AGGREGATOR_HPP

// The partial-aggregator concept: what every non-final level of the channel hierarchy
// (ChannelAggregation, hierarchy.hpp) is built from. LinearAggregator (D-CHAG-L) and
// CrossAttentionAggregator (D-CHAG-C) model it; so may a user's type, with no change to any
// library header, used as `DistributedChannels<MyAggregator>` (parallel/policies.hpp).
//
// A model A of PartialAggregator<T, ExecSpace> reduces each of `groups` groups of `group_size`
// contiguous tokens to one token. `group_begin` is the global index of its first group (a rank
// holds only some groups of a level): parameter names and initial values must depend on the
// global index only, so that every partition of the channels computes the same function.
//
//   A(std::string prefix, int groups, int group_size, int dim, int heads, int group_begin)
//       heads: the model's head count, for aggregators that use attention; others ignore it.
//   void init(std::uint64_t seed, double std)
//       every value from (seed, parameter name) alone (core/random.hpp: stream_id).
//   forward(const ExecSpace&, const ConstTensor3<T, ExecSpace>& tokens)  -> Tensor3
//       tokens [groups * group_size, N, dim] -> [groups, N, dim]; tokens stay alive until
//       backward(); the result is A's own buffer, valid until the next forward().
//   backward(const ExecSpace&, const ConstTensor3<T, ExecSpace>& dout, bool input_grad) -> Tensor3
//       accumulates (+=) the parameter gradients and returns dL/dtokens
//       [groups * group_size, N, dim], or an empty view when !input_grad.
//   void parameters(ParameterList<T, ExecSpace>&) const
//       appends every parameter under its logical (global) name: what checkpoints, the
//       optimiser and gradient clipping see.
//   void visit_storage(F&& f)
//       calls f(value_view, gradient_view) on every view of parameter storage, in a fixed
//       order: model sharding (parallel/sharded_unit.hpp) re-points them into its slices.
//   double flops(std::size_t rows) const
//       forward multiply-adds x2 for N = rows patches (benchmarks report FLOP/s with it).
//   static const char* name()
//       the kind, recorded as a checkpoint's "aggregator" (e.g. "linear").
// and, optionally (detected; used when the aggregator is the first level):
//   void backward_in_place(const ExecSpace&, const ConstTensor3<T, ExecSpace>& dout,
//                          const Unmanaged<T***, ExecSpace>& tokens)
//       backward() with dL/dtokens written over `tokens`, the buffer forward() read (the
//       caller's, which it no longer needs): the channel tokens are the largest tensor of the
//       stem, and their gradient then needs no buffer of its own.
//
// is_partial_aggregator<A, T, ExecSpace> says whether A has all of it;
// Impl::check_partial_aggregator<A, T, ExecSpace>() fails to compile with a message naming each
// member A lacks.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include <dchag/core/detection.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/embeddings.hpp>

namespace dchag {

namespace Impl {

// What visit_storage is called with: accepts any pair of views.
struct StorageProbe {
  template <class V, class G>
  void operator()(V&, G&) const {}
};

template <class A>
using aggregator_ctor_t = decltype(A(std::declval<std::string>(), 1, 1, 1, 1, 0));
template <class A>
using aggregator_init_t =
    decltype(std::declval<A&>().init(std::declval<std::uint64_t>(), std::declval<double>()));
template <class A, class T, class E>
using aggregator_forward_t = decltype(std::declval<A&>().forward(
    std::declval<const E&>(), std::declval<const ConstTensor3<T, E>&>()));
template <class A, class T, class E>
using aggregator_backward_t = decltype(std::declval<A&>().backward(
    std::declval<const E&>(), std::declval<const ConstTensor3<T, E>&>(), true));
template <class A, class T, class E>
using aggregator_parameters_t =
    decltype(std::declval<const A&>().parameters(std::declval<ParameterList<T, E>&>()));
template <class A>
using aggregator_visit_t =
    decltype(std::declval<A&>().visit_storage(std::declval<StorageProbe&>()));
template <class A>
using aggregator_flops_t = decltype(std::declval<const A&>().flops(std::size_t(1)));
template <class A>
using aggregator_name_t = decltype(A::name());

template <class A, class T, class E>
struct AggregatorMembers {
  static constexpr bool ctor = is_detected<aggregator_ctor_t, A>;
  static constexpr bool init = is_detected<aggregator_init_t, A>;
  static constexpr bool forward =
      is_detected_convertible<ConstTensor3<T, E>, aggregator_forward_t, A, T, E>();
  static constexpr bool backward =
      is_detected_convertible<ConstTensor3<T, E>, aggregator_backward_t, A, T, E>();
  static constexpr bool parameters = is_detected<aggregator_parameters_t, A, T, E>;
  static constexpr bool visit_storage = is_detected<aggregator_visit_t, A>;
  static constexpr bool flops = is_detected_convertible<double, aggregator_flops_t, A>();
  static constexpr bool name = is_detected_convertible<std::string, aggregator_name_t, A>();
  static constexpr bool movable = std::is_move_constructible<A>::value;
  static constexpr bool all = ctor && init && forward && backward && parameters &&
                              visit_storage && flops && name && movable;
};

}  // namespace Impl

template <class A, class T, class ExecSpace>
struct is_partial_aggregator
    : std::integral_constant<bool, Impl::AggregatorMembers<A, T, ExecSpace>::all> {};

namespace Impl {

// Where the hierarchy instantiates an aggregator: one message per missing member.
template <class A, class T, class E>
constexpr bool check_partial_aggregator() {
  using M = AggregatorMembers<A, T, E>;
  static_assert(M::ctor, "dchag partial aggregator (aggregation/aggregator.hpp): no constructor "
                         "A(std::string prefix, int groups, int group_size, int dim, int heads, "
                         "int group_begin)");
  static_assert(M::init, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                         "init(std::uint64_t seed, double std)");
  static_assert(M::forward, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                            "forward(const ExecSpace&, const ConstTensor3<T, ExecSpace>&) "
                            "returning a view convertible to ConstTensor3<T, ExecSpace>");
  static_assert(M::backward, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                             "backward(const ExecSpace&, const ConstTensor3<T, ExecSpace>&, "
                             "bool input_grad) returning a view convertible to "
                             "ConstTensor3<T, ExecSpace>");
  static_assert(M::parameters, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                               "parameters(ParameterList<T, ExecSpace>&) const");
  static_assert(M::visit_storage, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                                  "template visit_storage(F&& f) calling f(value, gradient)");
  static_assert(M::flops, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                          "double flops(std::size_t rows) const");
  static_assert(M::name, "dchag partial aggregator (aggregation/aggregator.hpp): no "
                         "static const char* name()");
  static_assert(M::movable, "dchag partial aggregator (aggregation/aggregator.hpp): not "
                            "move-constructible");
  return M::all;
}

template <class A, class T, class E>
using aggregator_backward_in_place_t = decltype(std::declval<A&>().backward_in_place(
    std::declval<const E&>(), std::declval<const ConstTensor3<T, E>&>(),
    std::declval<const Unmanaged<T***, E>&>()));

// Whether A has the optional backward_in_place.
template <class A, class T, class E>
constexpr bool has_backward_in_place = is_detected<aggregator_backward_in_place_t, A, T, E>;

}  // namespace Impl
}  // namespace dchag

#endif
