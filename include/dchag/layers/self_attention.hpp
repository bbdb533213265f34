#ifndef DCHAG_LAYERS_SELF_ATTENTION_HPP
#define DCHAG_LAYERS_SELF_ATTENTION_HPP

// timm's Attention (qkv_bias=True): multi-head self-attention over the L tokens of each sample,
//   qkv = x Wqkv^T + bqkv, per (sample, head) O = softmax(Q K^T / sqrt(head_dim)) V,
//   y = concat_h(O) Wproj^T + bproj.
// The inner width heads*head_dim is separate from dim: under tensor parallelism a rank holds
// only some heads (qkv column-parallel, proj row-parallel: parallel_linear.hpp), and on one rank
// it equals dim.

#include <cmath>
#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/heads.hpp>
#include <dchag/kernels/softmax.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/parallel_linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class SelfAttention {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;
  using tensor3 = View3<T, ExecSpace>;

  SelfAttention() = default;
  // defer_proj_bias: forward() leaves out proj's bias, which the caller adds with
  // add_output_bias() once it has summed the partial outputs of the ranks (Megatron's
  // row-parallel proj: the bias is added once, after the AllReduce). The bias stays a parameter
  // of this layer either way, and backward() is the same in both modes.
  // head_begin, total_heads: this layer's heads within the logical layer (total_heads 0: the
  // layer is whole); they only decide which parts of the logical weights init() produces.
  SelfAttention(std::string name, int dim, int heads, int head_dim, bool defer_proj_bias = false,
                int head_begin = 0, int total_heads = 0)
      : name_(std::move(name)), dim_(dim), heads_(heads), head_dim_(head_dim),
        head_begin_(head_begin), total_heads_(total_heads > 0 ? total_heads : heads) {
    Impl::require(dim > 0 && heads > 0 && head_dim > 0, "SelfAttention '", name_,
                  "': dim, heads and head_dim must be positive, got dim = ", dim,
                  ", heads = ", heads, ", head_dim = ", head_dim);
    Impl::require(head_begin >= 0 && head_begin + heads <= total_heads_, "SelfAttention '",
                  name_, "': heads [", head_begin, ", ", head_begin + heads,
                  ") do not fit in total_heads = ", total_heads_);
    const SplitRange inner_split{head_begin * head_dim, inner(), total_heads_ * head_dim};
    qkv_ = ColumnParallelLinear<T, ExecSpace>(name_ + ".qkv", dim, inner_split, 3);
    proj_ = RowParallelLinear<T, ExecSpace>(name_ + ".proj", inner_split, dim, defer_proj_bias);
  }

  // timm / ClimaX: weights trunc_normal(std), biases zero, drawn for the logical layer.
  void init(std::uint64_t seed, double std = 0.02) {
    qkv_.init_truncated_normal(seed, std);
    proj_.init_truncated_normal(seed, std);
  }

  // x holds `batch` samples of L tokens, row b*L + l. Returns [batch*L, dim].
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x, int batch, int L) {
    Impl::require(batch > 0 && L > 0, "SelfAttention '", name_, "': batch = ", batch,
                  " and L = ", L, " must be positive");
    Impl::require(x.extent(0) == std::size_t(batch) * L && x.extent(1) == std::size_t(dim_),
                  "SelfAttention '", name_, "': input ", Impl::shape_of(x), " must be [batch*L = ",
                  batch, "*", L, ", dim = ", dim_, "]");
    allocate(batch, L);
    const matrix qkv = qkv_.forward(space, x);
    split_heads(space, qkv, 0, batch, heads_, head_dim_, q_);
    split_heads(space, qkv, 1, batch, heads_, head_dim_, k_);
    split_heads(space, qkv, 2, batch, heads_, head_dim_, v_);
    batched_gemm(space, Op::N, Op::T, scale(), q_, k_, T(0), p_);
    const auto p = scores_as_rows(p_);
    softmax_rows(space, p, p);
    batched_gemm(space, Op::N, Op::N, T(1), p_, v_, T(0), o_);
    merge_heads(space, o_, merged_, 0);
    return proj_.forward(space, merged_);
  }

  // y += proj.bias; only for a layer constructed with defer_proj_bias.
  template <class YView>
  void add_output_bias(const ExecSpace& space, const YView& y) const {
    proj_.add_bias(space, y);
  }

  // Accumulates the parameter gradients; returns dL/dx (empty when not asked for).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    const matrix dmerged = proj_.backward(space, dy);  // checks dy against the forward shape
    allocate_backward();
    // O itself is not needed for the gradients: its buffer takes dO.
    const tensor3& dout = o_;
    split_heads(space, dmerged, 0, batch_, heads_, head_dim_, dout);
    batched_gemm(space, Op::N, Op::T, T(1), dout, v_, T(0), dp_);   // dP = dO V^T
    batched_gemm(space, Op::T, Op::N, T(1), p_, dout, T(0), dhead_);  // dV = P^T dO
    merge_heads(space, dhead_, dqkv_, 2);
    const auto dp = scores_as_rows(dp_);
    softmax_rows_backward(space, scores_as_rows(p_), dp, dp);  // dS, in place
    batched_gemm(space, Op::N, Op::N, scale(), dp_, k_, T(0), dhead_);  // dQ = dS K / sqrt(d)
    merge_heads(space, dhead_, dqkv_, 0);
    batched_gemm(space, Op::T, Op::N, scale(), dp_, q_, T(0), dhead_);  // dK = dS^T Q / sqrt(d)
    merge_heads(space, dhead_, dqkv_, 1);
    return qkv_.backward(space, dqkv_, input_grad);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    qkv_.visit_storage(f);
    proj_.visit_storage(f);
  }

  // PyTorch's state_dict order: qkv.weight, qkv.bias, proj.weight, proj.bias, each this layer's
  // part of the logical tensor (parallel_linear.hpp).
  void parameters(ParameterList<T, ExecSpace>& list) const {
    qkv_.parameters(list);
    proj_.parameters(list);
  }

  // The two projections and the two attention products, Q K^T and P V (softmax, splits and
  // biases are O(elements) and not counted).
  double flops(std::size_t batch, std::size_t L) const {
    const std::size_t rows = batch * L;
    return qkv_.flops(rows) + proj_.flops(rows) +
           2.0 * (2.0 * batch * heads_ * L * L * head_dim_);
  }

  const ColumnParallelLinear<T, ExecSpace>& qkv() const { return qkv_; }
  const RowParallelLinear<T, ExecSpace>& proj() const { return proj_; }
  const vector& proj_bias() const { return proj_.bias(); }
  const vector& grad_proj_bias() const { return proj_.grad_bias(); }
  // Attention probabilities of the last forward, [batch*heads, L, L].
  const tensor3& probabilities() const { return p_; }
  int dim() const { return dim_; }
  int heads() const { return heads_; }
  int head_dim() const { return head_dim_; }
  int inner() const { return heads_ * head_dim_; }
  int head_begin() const { return head_begin_; }
  int total_heads() const { return total_heads_; }
  bool defers_proj_bias() const { return proj_.skips_bias_add(); }
  const std::string& name() const { return name_; }

 private:
  compute_t<T> scale() const {
    return compute_t<T>(1) / static_cast<compute_t<T>>(std::sqrt(static_cast<double>(head_dim_)));
  }

  // [batch*heads, L, L] seen as [batch*heads*L, L]: softmax runs over the keys of each query.
  static auto scores_as_rows(const tensor3& s) {
    return Impl::as_matrix(s, s.extent(0) * s.extent(1), s.extent(2));
  }

  // Activations for this (batch, L), kept across steps while the shape does not change.
  void allocate(int batch, int L) {
    if (batch == batch_ && L == L_) return;
    batch_ = batch;
    L_ = L;
    const std::size_t bh = std::size_t(batch) * heads_, rows = std::size_t(batch) * L;
    q_ = tensor3(name_ + ".q", bh, L, head_dim_);
    k_ = tensor3(name_ + ".k", bh, L, head_dim_);
    v_ = tensor3(name_ + ".v", bh, L, head_dim_);
    p_ = tensor3(name_ + ".attn", bh, L, L);
    o_ = tensor3(name_ + ".context", bh, L, head_dim_);
    merged_ = matrix(name_ + ".merged", rows, inner());
  }

  // Backward-only buffers, allocated on the first backward so that inference never holds them.
  void allocate_backward() {
    if (dp_.extent(0) == p_.extent(0) && dp_.extent(1) == p_.extent(1)) return;
    dp_ = tensor3(name_ + ".dattn", p_.extent(0), p_.extent(1), p_.extent(2));
    dhead_ = tensor3(name_ + ".dhead", q_.extent(0), q_.extent(1), q_.extent(2));
    dqkv_ = matrix(name_ + ".dqkv", merged_.extent(0), 3 * inner());
  }

  std::string name_;
  int dim_ = 0, heads_ = 0, head_dim_ = 0, head_begin_ = 0, total_heads_ = 0;
  ColumnParallelLinear<T, ExecSpace> qkv_;
  RowParallelLinear<T, ExecSpace> proj_;
  int batch_ = 0, L_ = 0;
  tensor3 q_, k_, v_, p_, o_, dp_, dhead_;
  matrix merged_, dqkv_;
};

}  // namespace dchag

#endif
