#ifndef DCHAG_AGGREGATION_HIERARCHY_HPP
#define DCHAG_AGGREGATION_HIERARCHY_HPP

// Channel aggregation as a tree (D-CHAG): C channel tokens per patch -> ... -> 1.
//
// `levels` lists the token count after each level and ends in 1, e.g. {16, 4, 1} for C = 64:
// 64 channels -> 16 groups of 4 -> 4 groups of 4 -> 1. Every level but the last is a partial
// aggregator (a model of the concept in aggregator.hpp: LinearAggregator, CrossAttentionAggregator
// or a user's type) over contiguous groups; the last is
// the "final aggregator", a QueryCrossAttention over the remaining tokens named exactly as
// ClimaX's ("var_query", "var_agg.*"), so levels = {1} IS the ClimaX baseline (one cross-attention
// over all C channels).
//
// Names: partial level i (0-based) is "agg.{i}" and its group g (global index within the level)
// "agg.{i}.{g}", e.g. "agg.0.3.weight" / "agg.0.3.bias" (linear) or "agg.1.0.in_proj_weight",
// "agg.1.0.query" (cross-attention).
//
// Distribution (the partitioning policy decides, parallel/policy.hpp): a rank may own only the channels [channel_begin,
// channel_begin + channel_count). It runs the partial levels on them (partial_forward), the
// caller all-gathers the group tokens of the last partial level over the TP group, and the final
// aggregator runs on all of them (final_forward), possibly on a subset of its heads. The owned
// range must cover whole groups at every partial level; weights, names and initial values of the
// owned groups are those of the single-rank model. forward()/backward() chain the two when the
// rank owns every channel.

#include <cstdint>
#include <string>
#include <vector>

#include <dchag/aggregation/aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/cross_attention.hpp>
#include <dchag/layers/embeddings.hpp>

namespace dchag {

// What part of the hierarchy this rank runs. The default is the whole of it.
struct AggregationShard {
  int channel_begin = 0;       // first owned channel (global index)
  int channel_count = -1;      // owned channels; -1: all from channel_begin on
  int final_head_begin = 0;    // the final aggregator's heads held here ...
  int final_heads = -1;        // ... (-1: all of them)
  bool defer_final_out_bias = false;  // see QueryCrossAttention's defer_out_bias
};

namespace Impl {
inline std::string level_list(const std::vector<int>& v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "}";
}
}  // namespace Impl

template <class T, class ExecSpace, template <class, class> class Partial>
class ChannelAggregation {
 public:
  using partial_type = Partial<T, ExecSpace>;
  static_assert(Impl::check_partial_aggregator<partial_type, T, ExecSpace>(),
                "ChannelAggregation: the partial aggregator does not model the concept");
  using final_type = QueryCrossAttention<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;

  ChannelAggregation() = default;
  ChannelAggregation(int channels, int dim, int heads, std::vector<int> levels,
                     AggregationShard shard = {})
      : channels_(channels), dim_(dim), heads_(heads), levels_(std::move(levels)) {
    const std::string where = Impl::concat("ChannelAggregation (C = ", channels, ", levels ",
                                           Impl::level_list(levels_), ")");
    Impl::require(channels > 0 && dim > 0 && heads > 0, where,
                  ": channels, dim and heads must be positive, got dim = ", dim,
                  ", heads = ", heads);
    Impl::require(dim % heads == 0, where, ": dim = ", dim, " is not divisible by heads = ",
                  heads);
    Impl::require(!levels_.empty() && levels_.back() == 1, where,
                  ": the last level must reduce to 1 token per patch, got ",
                  levels_.empty() ? std::string("no levels") : std::to_string(levels_.back()));
    int count = channels;
    for (std::size_t i = 0; i < levels_.size(); ++i) {
      const int next = levels_[i];
      Impl::require(next > 0 && next <= count && count % next == 0, where, ": level ", i,
                    " must reduce ", count, " tokens to a divisor of ", count,
                    " (equal groups), got ", next);
      group_sizes_.push_back(count / next);
      count = next;
    }

    // The owned token range at each level must be whole groups of the level above.
    const int c0 = shard.channel_begin;
    const int cn = shard.channel_count < 0 ? channels - c0 : shard.channel_count;
    Impl::require(c0 >= 0 && cn > 0 && c0 + cn <= channels, where, ": owned channels [", c0,
                  ", ", c0 + cn, ") are not a non-empty part of [0, ", channels, ")");
    int t0 = c0, t1 = c0 + cn;
    token_begin_.push_back(t0);
    token_count_.push_back(t1 - t0);
    for (int i = 0; i + 1 < int(levels_.size()); ++i) {
      const int gs = group_sizes_[i];
      Impl::require(t0 % gs == 0 && t1 % gs == 0, where, ": owned ",
                    i == 0 ? "channels" : "group tokens", " [", t0, ", ", t1, ") of level ", i,
                    " do not cover whole groups of ", gs, "; each rank must own whole groups");
      t0 /= gs;
      t1 /= gs;
      partials_.emplace_back(Impl::concat("agg.", i), t1 - t0, gs, dim, heads, t0);
      token_begin_.push_back(t0);
      token_count_.push_back(t1 - t0);
    }

    const int fh = shard.final_heads < 0 ? heads - shard.final_head_begin : shard.final_heads;
    final_ = final_type("var_agg", "var_query", dim, fh, dim / heads, shard.defer_final_out_bias,
                        shard.final_head_begin, heads);
  }

  void init(std::uint64_t seed, double std = 0.02) {
    for (auto& p : partials_) p.init(seed, std);
    final_.init(seed, std);
  }

  // Whole hierarchy, for a rank that owns every channel: T[C, N, D] -> [N, D].
  matrix forward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& tokens) {
    require_whole("forward");
    return final_forward(space, partial_forward(space, tokens));
  }

  // Returns dL/dT [C, N, D], a view of a buffer owned by one of the levels.
  ConstTensor3<T, ExecSpace> backward(const ExecSpace& space,
                                      const ConstMatrix<T, ExecSpace>& dout) {
    require_whole("backward");
    return partial_backward(space, final_backward(space, dout));
  }

  // Partial levels on the owned channels: T[owned channels, N, D] -> [owned group tokens of the
  // last partial level, N, D]. With no partial level (levels = {1}) the input itself.
  ConstTensor3<T, ExecSpace> partial_forward(const ExecSpace& space,
                                             const ConstTensor3<T, ExecSpace>& tokens) {
    Impl::require(tokens.extent(0) == std::size_t(token_count_.front()) &&
                      tokens.extent(2) == std::size_t(dim_),
                  "ChannelAggregation: input ", Impl::shape_of(tokens), " must be [",
                  token_count_.front(), " owned channels (of ", channels_, "), N, ", dim_, "]");
    ConstTensor3<T, ExecSpace> x = tokens;
    for (auto& p : partials_) x = p.forward(space, x);
    return x;
  }

  // The final cross-attention over all group tokens of the last partial level (gathered from
  // every rank): [final_keys(), N, D] -> [N, D]. Inputs stay alive until final_backward().
  matrix final_forward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& group_tokens) {
    Impl::require(group_tokens.extent(0) == std::size_t(final_keys()), "ChannelAggregation: the ",
                  "final aggregator takes all ", final_keys(), " tokens of the last level, got ",
                  Impl::shape_of(group_tokens));
    return final_.forward(space, group_tokens);
  }

  // dL/d(group tokens) [final_keys(), N, D] (under tensor parallelism a partial sum over the
  // ranks' heads, which the caller all-reduces).
  ConstTensor3<T, ExecSpace> final_backward(const ExecSpace& space,
                                            const ConstMatrix<T, ExecSpace>& dout,
                                            bool input_grad = true) {
    return final_.backward(space, dout, input_grad);
  }

  // d[owned group tokens, N, D] -> dL/dT [owned channels, N, D]. With no partial level the
  // gradient itself. `tokens`, if given, is the buffer partial_forward() read T from, and the
  // caller's to lose: a first level with backward_in_place (aggregation/aggregator.hpp) writes
  // dL/dT over it and returns it.
  ConstTensor3<T, ExecSpace> partial_backward(const ExecSpace& space,
                                              const ConstTensor3<T, ExecSpace>& dgroups,
                                              bool input_grad = true,
                                              const Unmanaged<T***, ExecSpace>& tokens = {}) {
    Impl::require(dgroups.extent(0) == std::size_t(token_count_.back()) &&
                      dgroups.extent(2) == std::size_t(dim_),
                  "ChannelAggregation: gradient ", Impl::shape_of(dgroups), " must be [",
                  token_count_.back(), " owned tokens of the last partial level, N, ", dim_, "]");
    ConstTensor3<T, ExecSpace> d = dgroups;
    for (std::size_t i = partials_.size(); i-- > 0;) {
      if constexpr (Impl::has_backward_in_place<Partial<T, ExecSpace>, T, ExecSpace>) {
        if (i == 0 && input_grad && tokens.data() != nullptr) {
          partials_[0].backward_in_place(space, d, tokens);
          return tokens;
        }
      }
      d = partials_[i].backward(space, d, input_grad || i > 0);
    }
    return d;
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    for (auto& p : partials_) p.visit_storage(f);
    final_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (const auto& p : partials_) p.parameters(list);
    final_.parameters(list);
  }

  // Forward FLOPs for N = B*L patches (this rank's share).
  double flops(std::size_t rows) const {
    double f = 0;
    for (const auto& p : partials_) f += p.flops(rows);
    return f + final_.flops(final_keys(), rows);
  }

  int channels() const { return channels_; }
  int dim() const { return dim_; }
  int heads() const { return heads_; }
  const std::vector<int>& levels() const { return levels_; }
  // Tokens per group at level i (levels().size() entries; the last is the final's key count).
  const std::vector<int>& group_sizes() const { return group_sizes_; }
  // Number of tokens the final aggregator attends over (C for the baseline).
  int final_keys() const { return levels_.size() > 1 ? levels_[levels_.size() - 2] : channels_; }
  // Owned token range at the input of partial level i (i = partial_levels(): the final's input).
  int token_begin(int i) const { return token_begin_.at(i); }
  int token_count(int i) const { return token_count_.at(i); }
  int partial_levels() const { return int(partials_.size()); }
  const partial_type& partial(int i) const { return partials_.at(i); }
  const final_type& final_aggregator() const { return final_; }
  final_type& final_aggregator() { return final_; }
  bool owns_all_channels() const { return token_count_.front() == channels_; }

 private:
  void require_whole(const char* what) const {
    Impl::require(owns_all_channels(), "ChannelAggregation::", what, ": this instance owns ",
                  token_count_.front(), " of ", channels_,
                  " channels; use partial_* and final_* around the all-gather");
  }

  int channels_ = 0, dim_ = 0, heads_ = 0;
  std::vector<int> levels_, group_sizes_, token_begin_, token_count_;
  std::vector<partial_type> partials_;
  final_type final_;
};

}  // namespace dchag

#endif
