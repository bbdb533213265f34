#ifndef DCHAG_MODEL_VIT_BLOCK_HPP
#define DCHAG_MODEL_VIT_BLOCK_HPP

// timm's pre-LayerNorm ViT Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x)).

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/layers/layer_norm.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/mlp.hpp>
#include <dchag/layers/self_attention.hpp>

namespace dchag {
namespace Impl {

// Y = A + B on [rows, n] views (the residual connections, both directions).
template <class ExecSpace, class AV, class BV, class YV>
void residual_add(const ExecSpace& space, const AV& A, const BV& B, const YV& Y) {
  const char* where = "dchag::residual_add";
  require_same_shape(where, A, B);
  require_same_shape(where, A, Y);
  const std::int64_t n = static_cast<std::int64_t>(Y.extent(1));
  Kokkos::parallel_for(
      where, flat_policy(space, Y.extent(0) * Y.extent(1)), KOKKOS_LAMBDA(std::int64_t k) {
        Y(k / n, k % n) = A(k / n, k % n) + B(k / n, k % n);
      });
}

}  // namespace Impl

template <class T, class ExecSpace>
class Block {
 public:
  using matrix = View2<T, ExecSpace>;

  Block() = default;
  Block(std::string name, int dim, int heads, double mlp_ratio = 4.0, double eps = 1e-5)
      : name_(std::move(name)) {
    Impl::require(dim > 0 && heads > 0 && mlp_ratio > 0, "Block '", name_,
                  "': dim, heads and mlp_ratio must be positive, got dim = ", dim,
                  ", heads = ", heads, ", mlp_ratio = ", mlp_ratio);
    Impl::require(dim % heads == 0, "Block '", name_, "': dim = ", dim,
                  " is not divisible by heads = ", heads, " (heads * head_dim must equal dim)");
    const int hidden = static_cast<int>(dim * mlp_ratio);  // int(dim * mlp_ratio), as timm
    norm1_ = LayerNorm<T, ExecSpace>(name_ + ".norm1", dim, eps);
    attn_ = SelfAttention<T, ExecSpace>(name_ + ".attn", dim, heads, dim / heads);
    norm2_ = LayerNorm<T, ExecSpace>(name_ + ".norm2", dim, eps);
    mlp_ = Mlp<T, ExecSpace>(name_ + ".mlp", dim, hidden);
  }

  void init(std::uint64_t seed) {
    norm1_.init(seed);
    attn_.init(seed);
    norm2_.init(seed);
    mlp_.init(seed);
  }

  // x holds `batch` samples of L tokens (row b*L + l); x must stay alive until backward().
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x, int batch, int L) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Block '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", dim());
    const std::size_t rows = x.extent(0);
    if (mid_.extent(0) != rows) {
      mid_ = matrix(name_ + ".residual", rows, dim());
      y_ = matrix(name_ + ".out", rows, dim());
    }
    const matrix a = attn_.forward(space, norm1_.forward(space, x), batch, L);
    Impl::residual_add(space, x, a, mid_);
    const matrix m = mlp_.forward(space, norm2_.forward(space, mid_));
    Impl::residual_add(space, mid_, m, y_);
    return y_;
  }

  // Accumulates the parameter gradients; returns dL/dx, each residual adding the gradient
  // that skips its branch to the one through it.
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy) {
    Impl::require(dy.extent(0) == mid_.extent(0) && dy.extent(1) == std::size_t(dim()),
                  "Block '", name_, "': output gradient ", Impl::shape_of(dy),
                  " does not match the forward output [", mid_.extent(0), ", ", dim(), "]");
    if (dx_.extent(0) != dy.extent(0)) dx_ = matrix(name_ + ".dx", dy.extent(0), dim());
    const matrix dn2 = norm2_.backward(space, mlp_.backward(space, dy));
    Impl::residual_add(space, dy, dn2, dx_);  // dL/d(mid)
    const matrix dn1 = norm1_.backward(space, attn_.backward(space, dx_));
    add_scaled(space, dx_, T(1), dn1);
    return dx_;
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    norm1_.parameters(list);
    attn_.parameters(list);
    norm2_.parameters(list);
    mlp_.parameters(list);
  }

  // Both sub-layers, their norms and the two residual additions.
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
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  LayerNorm<T, ExecSpace> norm1_, norm2_;
  SelfAttention<T, ExecSpace> attn_;
  Mlp<T, ExecSpace> mlp_;
  matrix mid_, y_, dx_;
};

}  // namespace dchag

#endif
