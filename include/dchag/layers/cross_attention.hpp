#ifndef DCHAG_LAYERS_CROSS_ATTENTION_HPP
#define DCHAG_LAYERS_CROSS_ATTENTION_HPP

// Multi-head cross-attention from one learnable query to K key/value tokens per row, as
// ClimaX's channel aggregation (var_query + var_agg = torch.nn.MultiheadAttention):
//   q = Wq query + bq                          (one vector, shared by every row)
//   k_c = Wk T[c, n] + bk,  v_c = Wv T[c, n] + bv
//   per head: a = softmax(q . k / sqrt(head_dim)) over the K keys,  ctx = sum_c a_c v_c
//   out[n] = Wo concat_h(ctx) + bo
// Input is channel-major T[K, N, D] (row n of every key token matrix is the same patch), so the
// k|v projection is one GEMM over the K*N rows.
//
// Parameters as nn.MultiheadAttention names them: {name}.in_proj_weight [3*inner, D] (q|k|v
// stacked on rows, heads contiguous inside each), {name}.in_proj_bias [3*inner],
// {name}.out_proj.weight [D, inner], {name}.out_proj.bias [D]; the query is a separate
// parameter [1, 1, D] named by the caller (ClimaX: "var_query" next to "var_agg").
//
// inner = heads*head_dim is separate from D for tensor parallelism: a rank holds heads
// [head_begin, head_begin + heads) of total_heads (in_proj column-parallel in three sections,
// out_proj row-parallel: parallel_linear.hpp).

#include <cmath>
#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/cross_attention.hpp>
#include <dchag/kernels/gemm.hpp>
#include <dchag/kernels/softmax.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/parallel_linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class QueryCrossAttention {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;
  using tensor = View3<T, ExecSpace>;

  QueryCrossAttention() = default;
  // query_name: the query parameter's name (empty: name + ".query").
  // defer_out_bias: forward() leaves out out_proj's bias, which the caller adds with
  // add_output_bias() after summing the ranks' partial outputs (row-parallel out_proj). The
  // bias stays a parameter of this layer, and backward() is the same in both modes.
  // head_begin, total_heads: this layer's heads within the logical layer (total_heads 0: the
  // layer is whole); they only decide which parts of the logical weights init() produces.
  QueryCrossAttention(std::string name, std::string query_name, int dim, int heads, int head_dim,
                      bool defer_out_bias = false, int head_begin = 0, int total_heads = 0)
      : name_(std::move(name)), query_name_(std::move(query_name)), dim_(dim), heads_(heads),
        head_dim_(head_dim), head_begin_(head_begin),
        total_heads_(total_heads > 0 ? total_heads : heads) {
    if (query_name_.empty()) query_name_ = name_ + ".query";
    Impl::require(dim > 0 && heads > 0 && head_dim > 0, "QueryCrossAttention '", name_,
                  "': dim, heads and head_dim must be positive, got dim = ", dim,
                  ", heads = ", heads, ", head_dim = ", head_dim);
    Impl::require(head_begin >= 0 && head_begin + heads <= total_heads_, "QueryCrossAttention '",
                  name_, "': heads [", head_begin, ", ", head_begin + heads,
                  ") do not fit in total_heads = ", total_heads_);
    query_ = vector(query_name_, dim_);
    grad_query_ = vector(query_name_ + ".grad", dim_);
    const SplitRange inner_split{head_begin * head_dim, int(inner()), total_heads_ * head_dim};
    in_proj_ = ColumnParallelLinear<T, ExecSpace>(name_ + ".in_proj_weight", name_ + ".in_proj_bias",
                                                  dim, inner_split, 3);
    out_proj_ = RowParallelLinear<T, ExecSpace>(name_ + ".out_proj", inner_split, dim, defer_out_bias);
    q_ = vector(name_ + ".q", inner());
    dq_ = vector(name_ + ".dq", inner());
    if (holds_part()) partial_query_grad_ = vector(query_name_ + ".partial_grad", dim_);
  }

  // As PyTorch: in_proj_weight xavier-uniform over the logical [3*D', D] (D' = total inner
  // width), in_proj_bias and out_proj.bias zero; out_proj.weight trunc_normal(std), as ClimaX's
  // _init_weights does for every nn.Linear. The query is trunc_normal(std) too (ClimaX starts it
  // at zero, which would make every attention uniform and its gradient trivial at step 0).
  void init(std::uint64_t seed, double std = 0.02) {
    truncated_normal(query_, seed, stream_id(query_name_), std);
    const double total_inner = double(total_heads_) * head_dim_;
    const double bound = std::sqrt(6.0 / (double(dim_) + 3 * total_inner));
    in_proj_.init_uniform(seed, -bound, bound);
    out_proj_.init_truncated_normal(seed, std);
  }

  // tokens[K, N, D] -> out[N, D]. tokens must stay alive until backward().
  matrix forward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& tokens) {
    Impl::require(tokens.extent(2) == std::size_t(dim_) && tokens.extent(0) > 0 &&
                      tokens.extent(1) > 0,
                  "QueryCrossAttention '", name_, "': input ", Impl::shape_of(tokens),
                  " must be [keys, rows, dim = ", dim_, "]");
    x_ = tokens;
    allocate(tokens.extent(0), tokens.extent(1));
    Impl::cross_attention_query(space, in_proj_.weight(), in_proj_.bias(), query_, q_);
    gemm(space, Op::N, Op::T, T(1), tokens_as_rows(x_), kv_weight(in_proj_.weight()), T(0), kv_);
    add_bias(space, kv_, kv_bias(in_proj_.bias()));
    Impl::cross_attention_scores(space, shape(), q_, kv_, attn_);
    softmax_rows(space, attn_, attn_, scale());
    Impl::cross_attention_context(space, shape(), attn_, kv_, ctx_);
    return out_proj_.forward(space, ctx_);
  }

  // y += out_proj.bias; only for a layer constructed with defer_out_bias.
  template <class YView>
  void add_output_bias(const ExecSpace& space, const YView& y) const {
    out_proj_.add_bias(space, y);
  }

  // Accumulates every parameter gradient; returns dL/dtokens [K, N, D] (empty when not asked),
  // written into `into` when given: a [K, N, D] slot of a caller's buffer, so that neither a
  // copy nor a buffer of this layer's own is needed.
  // A layer holding only some heads sees only their share of the query's gradient (the query is
  // replicated, the heads are not): it leaves this call's share in partial_query_grad() instead,
  // for the caller to sum over the ranks holding the other heads and then hand back with
  // accumulate_query_grad(). (The input gradient is such a partial sum too.)
  tensor backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dout,
                  bool input_grad = true, const Unmanaged<T***, ExecSpace>& into = {}) {
    Impl::require(keys_ > 0, "QueryCrossAttention '", name_, "': backward() before forward()");
    const matrix dctx = out_proj_.backward(space, dout);  // checks dout against the forward
    allocate_backward();
    Impl::cross_attention_dattn(space, shape(), dctx, kv_, dattn_);
    softmax_rows_backward(space, attn_, dattn_, dattn_);  // d(scaled scores), in place
    Impl::cross_attention_dkv(space, shape(), scale(), q_, attn_, dattn_, dctx, dkv_);
    Impl::cross_attention_dq(space, shape(), scale(), dattn_, kv_, dq_partial_, dq_);
    if (holds_part()) Kokkos::deep_copy(space, partial_query_grad_, T(0));
    Impl::cross_attention_query_backward(space, dq_, query_, in_proj_.weight(),
                                         in_proj_.grad_weight(), in_proj_.grad_bias(),
                                         holds_part() ? partial_query_grad_ : grad_query_);
    const auto x = tokens_as_rows(x_);
    gemm(space, Op::T, Op::N, T(1), dkv_, x, T(1), kv_weight(in_proj_.grad_weight()));
    sum_rows(space, dkv_, kv_bias(in_proj_.grad_bias()));
    if (!input_grad) return tensor();
    tensor dx;
    if (into.data()) {
      Impl::require(into.extent(0) == keys_ && into.extent(1) == rows_ &&
                        into.extent(2) == std::size_t(dim_),
                    "QueryCrossAttention '", name_, "': input gradient slot ",
                    Impl::shape_of(into), " must be [", keys_, ", ", rows_, ", ", dim_, "]");
      dx = tensor(into.data(), keys_, rows_, dim_);
    } else {
      if (dx_.extent(0) != keys_ || dx_.extent(1) != rows_)
        dx_ = tensor(name_ + ".dx", keys_, rows_, dim_);
      dx = dx_;
    }
    gemm(space, Op::N, Op::N, T(1), dkv_, kv_weight(in_proj_.weight()), T(0),
         Impl::as_matrix(dx, keys_ * rows_, dim_));
    return dx;
  }

  // This backward's share of the query gradient, for a layer holding some heads only.
  const vector& partial_query_grad() const {
    Impl::require(holds_part(), "QueryCrossAttention '", name_, "': holds all ", total_heads_,
                  " heads, so its query gradient is never partial");
    return partial_query_grad_;
  }
  // grad(query) += partial_query_grad(), once the caller has summed it over the ranks.
  void accumulate_query_grad(const ExecSpace& space) {
    add_scaled(space, grad_query_, T(1), partial_query_grad());
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(query_, grad_query_);
    in_proj_.visit_storage(f);
    out_proj_.visit_storage(f);
  }

  // The query first (ClimaX registers var_query before var_agg), then nn.MultiheadAttention's
  // state_dict order, each this layer's part of the logical tensor (parallel_linear.hpp).
  void parameters(ParameterList<T, ExecSpace>& list) const {
    Impl::add_parameter<T, ExecSpace>(
        list, query_name_, Impl::with_leading_one<T, ExecSpace>(query_.data(), 1, dim_),
        Impl::with_leading_one<T, ExecSpace>(grad_query_.data(), 1, dim_), false);
    in_proj_.parameters(list);
    out_proj_.parameters(list);
  }

  // Forward multiply-adds x2 for K keys per row and N rows: the k|v projection, scores,
  // context and out_proj (the query projection is one vector and not counted).
  double flops(std::size_t keys, std::size_t rows) const {
    const double kn = double(keys) * rows;
    return 2.0 * kn * dim_ * 2 * inner() + 2.0 * 2.0 * kn * inner() + out_proj_.flops(rows);
  }

  const vector& query() const { return query_; }
  const vector& grad_query() const { return grad_query_; }
  const matrix& in_proj_weight() const { return in_proj_.weight(); }
  const matrix& grad_in_proj_weight() const { return in_proj_.grad_weight(); }
  const vector& in_proj_bias() const { return in_proj_.bias(); }
  const vector& grad_in_proj_bias() const { return in_proj_.grad_bias(); }
  const RowParallelLinear<T, ExecSpace>& out_proj() const { return out_proj_; }
  const vector& out_proj_bias() const { return out_proj_.bias(); }
  const vector& grad_out_proj_bias() const { return out_proj_.grad_bias(); }
  // Attention probabilities of the last forward, [N*heads, K] (row n*heads + h).
  const matrix& probabilities() const { return attn_; }
  int dim() const { return dim_; }
  int heads() const { return heads_; }
  int head_dim() const { return head_dim_; }
  int head_begin() const { return head_begin_; }
  int total_heads() const { return total_heads_; }
  std::size_t inner() const { return std::size_t(heads_) * head_dim_; }
  bool defers_out_bias() const { return out_proj_.skips_bias_add(); }
  // Whether this layer holds only some of the logical layer's heads.
  bool holds_part() const { return heads_ < total_heads_; }
  const std::string& name() const { return name_; }
  const std::string& query_name() const { return query_name_; }

 private:
  compute_t<T> scale() const {
    return compute_t<T>(1) / static_cast<compute_t<T>>(std::sqrt(static_cast<double>(head_dim_)));
  }
  Impl::CrossAttentionShape shape() const {
    return {std::int64_t(keys_), std::int64_t(rows_), heads_, head_dim_};
  }

  auto tokens_as_rows(const ConstTensor3<T, ExecSpace>& t) const {
    return Impl::as_matrix(t, t.extent(0) * t.extent(1), t.extent(2));
  }
  // Rows [inner, 3*inner) of in_proj: the k|v projection as one [2*inner, D] matrix.
  Unmanaged<T**, ExecSpace> kv_weight(const matrix& w) const {
    return Unmanaged<T**, ExecSpace>(w.data() + inner() * dim_, 2 * inner(), dim_);
  }
  Unmanaged<T*, ExecSpace> kv_bias(const vector& b) const {
    return Unmanaged<T*, ExecSpace>(b.data() + inner(), 2 * inner());
  }

  void allocate(std::size_t keys, std::size_t rows) {
    if (keys == keys_ && rows == rows_) return;
    keys_ = keys;
    rows_ = rows;
    kv_ = matrix(name_ + ".kv", keys * rows, 2 * inner());
    attn_ = matrix(name_ + ".attn", rows * heads_, keys);
    ctx_ = matrix(name_ + ".context", rows, inner());
  }

  // Backward-only buffers, allocated on the first backward so that inference never holds them.
  void allocate_backward() {
    if (dkv_.extent(0) == kv_.extent(0) && dattn_.extent(0) == attn_.extent(0)) return;
    dkv_ = matrix(name_ + ".dkv", kv_.extent(0), kv_.extent(1));
    dattn_ = matrix(name_ + ".dattn", attn_.extent(0), attn_.extent(1));
    // Enough chunks to keep every thread of a host busy, few enough to sum quickly.
    const std::size_t chunks = kv_.extent(0) < 256 ? kv_.extent(0) : 256;
    dq_partial_ = View2<accum_t<T>, ExecSpace>(name_ + ".dq_partial", chunks, inner());
  }

  std::string name_, query_name_;
  int dim_ = 0, heads_ = 0, head_dim_ = 0, head_begin_ = 0, total_heads_ = 0;
  vector query_, grad_query_, partial_query_grad_;
  ColumnParallelLinear<T, ExecSpace> in_proj_;
  RowParallelLinear<T, ExecSpace> out_proj_;
  ConstTensor3<T, ExecSpace> x_;
  std::size_t keys_ = 0, rows_ = 0;
  vector q_, dq_;
  matrix kv_, attn_, ctx_, dkv_, dattn_;
  View2<accum_t<T>, ExecSpace> dq_partial_;  // sums of many terms: never 16-bit
  tensor dx_;
};

}  // namespace dchag

#endif
