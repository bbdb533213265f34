#ifndef DCHAG_MODEL_VIT_BLOCK_HPP
#define DCHAG_MODEL_VIT_BLOCK_HPP

// timm's pre-LayerNorm ViT Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x)).
//
// Tensor parallelism (Megatron) over the ranks of a communicator `tp` of p ranks: rank r holds
// heads [r*heads/p, +heads/p) of the attention (qkv column-parallel, proj row-parallel) and
// hidden units [r*H/p, +H/p) of the MLP (fc1 column-parallel, fc2 row-parallel). Each branch's
// output is a partial sum over the rank's heads or hidden units: it is summed over tp, then the
// (replicated) proj / fc2 bias is added once. Backward mirrors it: the gradient at the branch
// input is a partial sum, summed over tp before the norm's backward. Norms, biases and
// residuals see identical data on every rank, so their gradients agree without communication.
// p = 1 (the default, MPI_COMM_SELF) is the whole block; the same code runs, with collectives
// that do not call MPI.
// The all-reduces are blocking: each one's result is what the next operation reads (the bias,
// residual and norm after a branch; the norm's backward after a branch's input gradient), and
// nothing else of the block is left to compute meanwhile. (The branch's weight gradients could
// be, were the layers to compute them apart from the input gradient.)
//
// Regularisation in training (model/dropout_context.hpp), as timm's Block with ClimaX's
// settings: x = x + drop_path1(proj_drop(attn(norm1(x)))); x = x + drop_path2(drop2(fc2(
// drop1(gelu(fc1(norm2(x))))))). proj_drop and drop2 act after the sum over tp and the bias, on
// the whole (replicated) branch output; drop1 on this rank's hidden units, keyed by their
// logical index. The masks are regenerated in the backward from the context of the forward.

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/dropout.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/kernels/residual.hpp>
#include <dchag/layers/layer_norm.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/mlp.hpp>
#include <dchag/layers/self_attention.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {
namespace Impl {

// A double as text that tells apart any two different values (configuration agreement).
inline std::string exact_text(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", x);
  return text;
}

// The Communicator held by a Block or an Encoder: empty only in a default-constructed one.
inline const Communicator& require_tp(const std::optional<Communicator>& tp, const char* what,
                                      const std::string& name) {
  require(tp.has_value(), what, " '", name,
          "': default-constructed, it has no tensor-parallel communicator");
  return *tp;
}

}  // namespace Impl

template <class T, class ExecSpace>
class Block {
 public:
  using matrix = View2<T, ExecSpace>;

  // Default-constructed: an empty block to assign to (holds no communicator, so it never
  // duplicates one: that would be a collective).
  Block() = default;
  // tp: the tensor-parallel group (see the top of this file); collective over it when it has
  // more than one rank. heads and the MLP width int(dim * mlp_ratio) must divide by its size.
  // rates: dropout and drop-path of this block in training (none by default).
  Block(std::string name, int dim, int heads, double mlp_ratio = 4.0, double eps = 1e-5,
        Communicator tp = Communicator(MPI_COMM_SELF), DropoutRates rates = {})
      : name_(std::move(name)), tp_(std::move(tp)), rates_(rates) {
    const int p = tp_->size(), r = tp_->rank();
    // Ranks that disagree would run different collectives and hang later: compare first (every
    // rank of tp takes this collective), so every check below fails alike on every rank.
    if (p > 1)
      check_agreement(*tp_, "the configuration of Block '" + name_ + "'",
                      Impl::concat("dim = ", dim, ", heads = ", heads, ", mlp_ratio = ",
                                   Impl::exact_text(mlp_ratio), ", eps = ", Impl::exact_text(eps),
                                   ", drop_rate = ", Impl::exact_text(rates.drop),
                                   ", drop_path_rate = ", Impl::exact_text(rates.path)));
    Impl::check_rates("Block", name_, rates);
    Impl::require(dim > 0 && heads > 0 && mlp_ratio > 0, "Block '", name_,
                  "': dim, heads and mlp_ratio must be positive, got dim = ", dim,
                  ", heads = ", heads, ", mlp_ratio = ", mlp_ratio);
    Impl::require(dim % heads == 0, "Block '", name_, "': dim = ", dim,
                  " is not divisible by heads = ", heads, " (heads * head_dim must equal dim)");
    const int hidden = static_cast<int>(dim * mlp_ratio);  // int(dim * mlp_ratio), as timm
    Impl::require(heads % p == 0, "Block '", name_, "': heads = ", heads,
                  " do not split evenly over the ", p, " ranks of the tensor-parallel group (",
                  heads, " % ", p, " = ", heads % p, ")");
    Impl::require(hidden % p == 0, "Block '", name_, "': the MLP hidden width ", hidden,
                  " (dim = ", dim, " x mlp_ratio = ", mlp_ratio,
                  ") does not split evenly over the ", p,
                  " ranks of the tensor-parallel group (", hidden, " % ", p, " = ", hidden % p,
                  ")");
    const int local_heads = heads / p, local_hidden = hidden / p;
    norm1_ = LayerNorm<T, ExecSpace>(name_ + ".norm1", dim, eps);
    // The output biases are always deferred: added after the sum over tp (a no-op sum at p = 1).
    attn_ = SelfAttention<T, ExecSpace>(name_ + ".attn", dim, local_heads, dim / heads,
                                        /*defer_proj_bias=*/true, r * local_heads, heads);
    norm2_ = LayerNorm<T, ExecSpace>(name_ + ".norm2", dim, eps);
    mlp_ = Mlp<T, ExecSpace>(name_ + ".mlp", dim, local_hidden, /*defer_fc2_bias=*/true,
                             r * local_hidden, hidden);
  }

  void init(std::uint64_t seed) {
    norm1_.init(seed);
    attn_.init(seed);
    norm2_.init(seed);
    mlp_.init(seed);
  }

  // x holds `batch` samples of L tokens (row b*L + l); x must stay alive until backward().
  // ctx: training or evaluation, and the keys of the dropout masks (evaluation by default).
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x, int batch, int L,
                 const DropoutContext& ctx = {}) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Block '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", dim());
    const std::size_t rows = x.extent(0);
    if (mid_.extent(0) != rows) {
      mid_ = matrix(name_ + ".residual", rows, dim());
      y_ = matrix(name_ + ".out", rows, dim());
    }
    set_sites(ctx, L);
    const Communicator& tp = this->tp();
    // Each branch's output (the layer's own buffer, not needed by its backward) is this rank's
    // partial sum; the bias goes in once, after the sum, and dropout after the bias.
    const matrix a = attn_.forward(space, norm1_.forward(space, x), batch, L);
    all_reduce_sum(space, tp, a);
    attn_.add_output_bias(space, a);
    mask_branch(space, proj_drop_, drop_path1_, a, a);
    residual_add(space, x, a, mid_);
    const matrix m =
        mlp_.forward(space, norm2_.forward(space, mid_), drop1_, tokens_, sample_begin_);
    all_reduce_sum(space, tp, m);
    mlp_.add_output_bias(space, m);
    mask_branch(space, drop2_, drop_path2_, m, m);
    residual_add(space, mid_, m, y_);
    return y_;
  }

  // Accumulates the parameter gradients; returns dL/dx, each residual adding the gradient
  // that skips its branch to the one through it. dy must be the same on every rank of tp.
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy) {
    Impl::require(dy.extent(0) == mid_.extent(0) && dy.extent(1) == std::size_t(dim()),
                  "Block '", name_, "': output gradient ", Impl::shape_of(dy),
                  " does not match the forward output [", mid_.extent(0), ", ", dim(), "]");
    const Communicator& tp = this->tp();
    if (dx_.extent(0) != dy.extent(0)) dx_ = matrix(name_ + ".dx", dy.extent(0), dim());
    // A branch's input gradient only covers this rank's hidden units / heads: sum it over tp
    // (in the buffer the layer handed out) before the replicated norm sees it.
    // With dropout, the gradient into a branch is the masked one, in a buffer of its own: dy
    // and dL/d(mid) also take the residual path unmasked.
    const matrix dm = mlp_.backward(space, masked_gradient(space, drop2_, drop_path2_, dy));
    all_reduce_sum(space, tp, dm);
    const matrix dn2 = norm2_.backward(space, dm);
    residual_add(space, dy, dn2, dx_);  // dL/d(mid)
    const matrix da =
        attn_.backward(space, masked_gradient(space, proj_drop_, drop_path1_, dx_));
    all_reduce_sum(space, tp, da);
    const matrix dn1 = norm1_.backward(space, da);
    add_scaled(space, dx_, T(1), dn1);
    return dx_;
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    norm1_.visit_storage(f);
    attn_.visit_storage(f);
    norm2_.visit_storage(f);
    mlp_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    norm1_.parameters(list);
    attn_.parameters(list);
    norm2_.parameters(list);
    mlp_.parameters(list);
  }

  // This rank's work: its share of both sub-layers, and the (replicated) norms and residual
  // additions.
  double flops(std::size_t batch, std::size_t L) const {
    const std::size_t rows = batch * L;
    return norm1_.flops(rows) + attn_.flops(batch, L) + norm2_.flops(rows) + mlp_.flops(rows) +
           2.0 * rows * dim();
  }

  const LayerNorm<T, ExecSpace>& norm1() const { return norm1_; }
  const SelfAttention<T, ExecSpace>& attn() const { return attn_; }
  const LayerNorm<T, ExecSpace>& norm2() const { return norm2_; }
  const Mlp<T, ExecSpace>& mlp() const { return mlp_; }
  int dim() const { return norm1_.dim(); }
  // Heads and MLP hidden width of the whole (logical) block; attn() and mlp() hold this rank's.
  int heads() const { return attn_.total_heads(); }
  int hidden() const { return mlp_.total_hidden(); }
  // The tensor-parallel group (MPI_COMM_SELF unless one was given).
  const Communicator& tp() const { return Impl::require_tp(tp_, "Block", name_); }
  const std::string& name() const { return name_; }
  const DropoutRates& dropout_rates() const { return rates_; }

 private:
  // The sites of this forward (inactive in evaluation or at rate 0), kept for the backward.
  void set_sites(const DropoutContext& ctx, int L) {
    proj_drop_ = ctx.site(name_ + ".attn.proj_drop", rates_.drop);
    drop1_ = ctx.site(name_ + ".mlp.drop1", rates_.drop);
    drop2_ = ctx.site(name_ + ".mlp.drop2", rates_.drop);
    drop_path1_ = ctx.site(name_ + ".drop_path1", rates_.path);
    drop_path2_ = ctx.site(name_ + ".drop_path2", rates_.path);
    tokens_ = std::size_t(L);
    sample_begin_ = ctx.sample_begin;
  }

  // out = drop_path(dropout(in)) (out may be in); both are diagonal, so also their backward.
  template <class InV>
  void mask_branch(const ExecSpace& space, const DropoutSite& drop, const DropoutSite& path,
                   const InV& in, const matrix& out) const {
    if (!drop.active() && !path.active()) {
      if (in.data() != out.data()) Kokkos::deep_copy(space, out, in);
      return;
    }
    if (drop.active()) {
      dropout(space, drop, in, out, tokens_, sample_begin_);
      if (path.active()) drop_path(space, path, out, out, tokens_, sample_begin_);
    } else {
      drop_path(space, path, in, out, tokens_, sample_begin_);
    }
  }

  // The gradient into a branch: g itself without dropout, else its masked copy.
  ConstMatrix<T, ExecSpace> masked_gradient(const ExecSpace& space, const DropoutSite& drop,
                                            const DropoutSite& path,
                                            const ConstMatrix<T, ExecSpace>& g) {
    if (!drop.active() && !path.active()) return g;
    if (branch_grad_.extent(0) != g.extent(0))
      branch_grad_ = matrix(name_ + ".branch_grad", g.extent(0), dim());
    mask_branch(space, drop, path, g, branch_grad_);
    return branch_grad_;
  }

  std::string name_;
  std::optional<Communicator> tp_;
  DropoutRates rates_;
  LayerNorm<T, ExecSpace> norm1_, norm2_;
  SelfAttention<T, ExecSpace> attn_;
  Mlp<T, ExecSpace> mlp_;
  matrix mid_, y_, dx_, branch_grad_;
  DropoutSite proj_drop_, drop1_, drop2_, drop_path1_, drop_path2_;
  std::size_t tokens_ = 1;
  std::uint64_t sample_begin_ = 0;
};

}  // namespace dchag

#endif
