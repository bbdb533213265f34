#ifndef DCHAG_AGGREGATION_CROSS_ATTENTION_AGGREGATOR_HPP
#define DCHAG_AGGREGATION_CROSS_ATTENTION_AGGREGATOR_HPP

// D-CHAG-C partial aggregator: each group of `group_size` contiguous tokens is reduced to one
// token by its own QueryCrossAttention (own learnable query, q/k/v/out projections). Group g
// (GLOBAL index) is named "{prefix}.{g}": parameters "{prefix}.{g}.query" [1, 1, D],
// "{prefix}.{g}.in_proj_weight", ".in_proj_bias", ".out_proj.weight", ".out_proj.bias".
// A model of the partial-aggregator concept (aggregation/aggregator.hpp).
//
// Groups run one after the other: a group's channels are one contiguous [group_size, N, D] block
// of the channel-major input, so each is an ordinary cross-attention call with no copy in.

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

template <class T, class ExecSpace>
class CrossAttentionAggregator {
 public:
  using tensor = View3<T, ExecSpace>;

  CrossAttentionAggregator() = default;
  CrossAttentionAggregator(std::string prefix, int groups, int group_size, int dim, int heads,
                           int group_begin = 0)
      : prefix_(std::move(prefix)), groups_(groups), group_size_(group_size), dim_(dim),
        begin_(group_begin) {
    Impl::require(groups > 0 && group_size > 0 && dim > 0 && heads > 0 && group_begin >= 0,
                  "CrossAttentionAggregator '", prefix_,
                  "': need groups, group_size, dim, heads > 0 and group_begin >= 0, got groups = ",
                  groups, ", group_size = ", group_size, ", dim = ", dim, ", heads = ", heads,
                  ", group_begin = ", group_begin);
    Impl::require(dim % heads == 0, "CrossAttentionAggregator '", prefix_, "': dim = ", dim,
                  " is not divisible by heads = ", heads);
    for (int g = 0; g < groups_; ++g) {
      const std::string name = Impl::concat(prefix_, '.', begin_ + g);
      attn_.emplace_back(name, name + ".query", dim, heads, dim / heads);
    }
  }

  void init(std::uint64_t seed, double std = 0.02) {
    for (auto& a : attn_) a.init(seed, std);
  }

  // tokens must stay alive until backward().
  tensor forward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& tokens) {
    Impl::require(tokens.extent(0) == std::size_t(groups_) * group_size_ &&
                      tokens.extent(2) == std::size_t(dim_) && tokens.extent(1) > 0,
                  "CrossAttentionAggregator '", prefix_, "': input ", Impl::shape_of(tokens),
                  " must be [", groups_, " groups x ", group_size_, " = ",
                  groups_ * group_size_, ", N, ", dim_, "]");
    const std::size_t N = tokens.extent(1), block = std::size_t(group_size_) * N * dim_;
    if (out_.extent(1) != N) out_ = tensor(prefix_ + ".out", groups_, N, dim_);
    for (int g = 0; g < groups_; ++g) {
      const ConstTensor3<T, ExecSpace> x(tokens.data() + g * block, group_size_, N, dim_);
      const auto y = attn_[g].forward(space, x);
      Kokkos::deep_copy(space, row_block(out_, g), y);
    }
    return out_;
  }

  // Accumulates every group's parameter gradients; returns dL/dtokens (empty when not asked).
  tensor backward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& dout,
                  bool input_grad = true) {
    Impl::require(out_.extent(1) > 0, "CrossAttentionAggregator '", prefix_,
                  "': backward() before forward()");
    Impl::require(dout.extent(0) == out_.extent(0) && dout.extent(1) == out_.extent(1) &&
                      dout.extent(2) == out_.extent(2),
                  "CrossAttentionAggregator '", prefix_, "': output gradient ",
                  Impl::shape_of(dout), " does not match the forward output ",
                  Impl::shape_of(out_));
    const std::size_t N = dout.extent(1), rows = N * dim_;
    if (input_grad && dx_.extent(1) != N)
      dx_ = tensor(prefix_ + ".dx", std::size_t(groups_) * group_size_, N, dim_);
    for (int g = 0; g < groups_; ++g) {
      const ConstMatrix<T, ExecSpace> dy(dout.data() + g * rows, N, dim_);
      // Each group writes its channels' gradient straight into its slot of dx_.
      const Tensor3<T, ExecSpace> slot(input_grad ? dx_.data() + g * group_size_ * rows : nullptr,
                                       group_size_, N, dim_);
      attn_[g].backward(space, dy, input_grad, slot);
    }
    return input_grad ? dx_ : tensor();
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    for (auto& a : attn_) a.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (const auto& a : attn_) a.parameters(list);
  }

  double flops(std::size_t rows) const {
    double f = 0;
    for (const auto& a : attn_) f += a.flops(group_size_, rows);
    return f;
  }

  static const char* name() { return "cross_attention"; }

  // The cross-attention of local group g (global group group_begin + g).
  const QueryCrossAttention<T, ExecSpace>& group(int g) const { return attn_.at(g); }
  int groups() const { return groups_; }
  int group_size() const { return group_size_; }
  int group_begin() const { return begin_; }
  int dim() const { return dim_; }
  const std::string& prefix() const { return prefix_; }

 private:
  static Unmanaged<T**, ExecSpace> row_block(const tensor& t, int g) {
    return Unmanaged<T**, ExecSpace>(t.data() + g * t.extent(1) * t.extent(2), t.extent(1),
                                     t.extent(2));
  }

  std::string prefix_;
  int groups_ = 0, group_size_ = 0, dim_ = 0, begin_ = 0;
  std::vector<QueryCrossAttention<T, ExecSpace>> attn_;
  tensor out_, dx_;
};

}  // namespace dchag

#endif
