#ifndef DCHAG_LAYERS_LAYER_NORM_HPP
#define DCHAG_LAYERS_LAYER_NORM_HPP

// torch.nn.LayerNorm over the last dimension of [rows, dim] activations, with an affine weight
// (init 1) and bias (init 0).

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/layer_norm.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class LayerNorm {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;

  LayerNorm() = default;
  LayerNorm(std::string name, int dim, double eps = 1e-5)
      : name_(std::move(name)), dim_(dim), eps_(eps) {
    Impl::require(dim > 0, "LayerNorm '", name_, "': dim must be positive, got ", dim);
    Impl::require(eps > 0, "LayerNorm '", name_, "': eps must be positive, got ", eps);
    weight_ = vector(name_ + ".weight", dim_);
    bias_ = vector(name_ + ".bias", dim_);
    grad_weight_ = vector(name_ + ".weight.grad", dim_);
    grad_bias_ = vector(name_ + ".bias.grad", dim_);
    init();
  }

  // Deterministic (weight 1, bias 0); the seed is taken only so that every layer initialises
  // through the same call.
  void init(std::uint64_t /*seed*/ = 0) {
    Kokkos::deep_copy(weight_, T(1));
    Kokkos::deep_copy(bias_, T(0));
  }

  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x) {
    Impl::require(x.extent(1) == std::size_t(dim_), "LayerNorm '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", dim_);
    x_ = x;
    const std::size_t rows = x.extent(0);
    if (y_.extent(0) != rows) {
      y_ = matrix(name_ + ".out", rows, dim_);
      mean_ = statistics(name_ + ".mean", rows);
      rstd_ = statistics(name_ + ".rstd", rows);
    }
    layer_norm(space, x, weight_, bias_, compute_t<T>(eps_), y_, mean_, rstd_);
    return y_;
  }

  // Accumulates the parameter gradients; returns dL/dx (empty when not asked for, although the
  // kernel computes it anyway: its parameter and input gradients share the row statistics).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    Impl::require(x_.data() != nullptr && dy.extent(0) == x_.extent(0) &&
                      dy.extent(1) == std::size_t(dim_),
                  "LayerNorm '", name_, "': output gradient ", Impl::shape_of(dy),
                  " does not match the forward output [", x_.extent(0), ", ", dim_, "]");
    if (dx_.extent(0) != dy.extent(0)) dx_ = matrix(name_ + ".dx", dy.extent(0), dim_);
    layer_norm_backward(space, x_, weight_, mean_, rstd_, dy, dx_, grad_weight_, grad_bias_);
    return input_grad ? dx_ : matrix();
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_weight_);
    f(bias_, grad_bias_);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    Impl::add_parameter<T, ExecSpace>(list, name_ + ".weight", weight_, grad_weight_, false);
    Impl::add_parameter<T, ExecSpace>(list, name_ + ".bias", bias_, grad_bias_, false);
  }

  // Per element: mean (1), centred square sum (3), normalise, scale and shift (4).
  double flops(std::size_t rows) const { return 8.0 * rows * dim_; }

  const vector& weight() const { return weight_; }
  const vector& bias() const { return bias_; }
  const vector& grad_weight() const { return grad_weight_; }
  const vector& grad_bias() const { return grad_bias_; }
  int dim() const { return dim_; }
  double eps() const { return eps_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int dim_ = 0;
  double eps_ = 1e-5;
  vector weight_, bias_, grad_weight_, grad_bias_;
  ConstMatrix<T, ExecSpace> x_;
  matrix y_, dx_;
  // Row statistics in the accumulation type: the backward then uses the mean and rstd the
  // forward normalised with, not their 16-bit roundings.
  using statistics = View1<accum_t<T>, ExecSpace>;
  statistics mean_, rstd_;
};

}  // namespace dchag

#endif
