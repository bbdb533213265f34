#ifndef DCHAG_LAYERS_LINEAR_HPP
#define DCHAG_LAYERS_LINEAR_HPP

// y = x W^T + b on rows of features, W stored [out, in] as torch.nn.Linear does.

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/gemm.hpp>

namespace dchag {

// Inputs are taken as unmanaged const matrices so that any contiguous LayoutRight buffer (a
// layer's output, or a reshape of a rank-3/4 activation) can be passed without a copy.
template <class T, class ExecSpace>
using ConstMatrix = Unmanaged<const T**, ExecSpace>;

template <class T, class ExecSpace>
class Linear {
 public:
  using matrix = View2<T, ExecSpace>;

  Linear() = default;
  // Parameters "{name}.weight" and "{name}.bias", as torch.nn.Linear's.
  Linear(std::string name, int in_features, int out_features, bool bias = true)
      : Linear(name + ".weight", name + ".bias", in_features, out_features, bias, name) {}
  // Parameters under other names (nn.MultiheadAttention's "in_proj_weight", "in_proj_bias").
  Linear(std::string weight_name, std::string bias_name, int in_features, int out_features,
         bool bias)
      : Linear(weight_name, std::move(bias_name), in_features, out_features, bias, weight_name) {}

  // timm / ClimaX: weights ~ trunc_normal(std 0.02), biases zero.
  void init(std::uint64_t seed, double std = 0.02) {
    truncated_normal(weight_, seed, stream_id(weight_name_), std);
    if (has_bias_) Kokkos::deep_copy(bias_, T(0));
  }

  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x) {
    Impl::require(x.extent(1) == std::size_t(in_), "Linear '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", in_);
    x_ = x;
    if (y_.extent(0) != x.extent(0)) y_ = matrix(name_ + ".out", x.extent(0), out_);
    gemm(space, Op::N, Op::T, T(1), x, weight_, T(0), y_);
    if (has_bias_) add_bias(space, y_, bias_);
    return y_;
  }

  // Accumulates the parameter gradients; returns dL/dx (empty when not asked for).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    Impl::require(dy.extent(0) == x_.extent(0) && dy.extent(1) == std::size_t(out_),
                  "Linear '", name_, "': output gradient ", Impl::shape_of(dy),
                  " does not match the forward output [", x_.extent(0), ", ", out_, "]");
    gemm(space, Op::T, Op::N, T(1), dy, x_, T(1), grad_weight_);
    if (has_bias_) sum_rows(space, dy, grad_bias_);
    if (!input_grad) return matrix();
    if (dx_.extent(0) != dy.extent(0)) dx_ = matrix(name_ + ".dx", dy.extent(0), in_);
    gemm(space, Op::N, Op::N, T(1), dy, weight_, T(0), dx_);
    return dx_;
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_weight_);
    if (has_bias_) f(bias_, grad_bias_);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    Impl::add_parameter<T, ExecSpace>(list, weight_name_, weight_, grad_weight_, true);
    if (has_bias_) Impl::add_parameter<T, ExecSpace>(list, bias_name_, bias_, grad_bias_, false);
  }

  // Forward multiply-adds x2 for `rows` rows; backward costs twice that.
  double flops(std::size_t rows) const { return 2.0 * rows * in_ * out_; }

  // The result of the last forward (kept until the next one).
  const matrix& output() const { return y_; }
  const matrix& weight() const { return weight_; }
  const View1<T, ExecSpace>& bias() const { return bias_; }
  const matrix& grad_weight() const { return grad_weight_; }
  const View1<T, ExecSpace>& grad_bias() const { return grad_bias_; }
  int in_features() const { return in_; }
  int out_features() const { return out_; }
  const std::string& name() const { return name_; }
  const std::string& weight_name() const { return weight_name_; }
  const std::string& bias_name() const { return bias_name_; }
  bool has_bias() const { return has_bias_; }

 private:
  // `name` labels the activation buffers.
  Linear(std::string weight_name, std::string bias_name, int in_features, int out_features,
         bool bias, std::string name)
      : name_(std::move(name)), weight_name_(std::move(weight_name)),
        bias_name_(std::move(bias_name)), in_(in_features), out_(out_features), has_bias_(bias) {
    Impl::require(in_features > 0 && out_features > 0, "Linear '", name_,
                  "': features must be positive, got in = ", in_features,
                  ", out = ", out_features);
    weight_ = matrix(weight_name_, out_, in_);
    grad_weight_ = matrix(weight_name_ + ".grad", out_, in_);
    if (has_bias_) {
      bias_ = View1<T, ExecSpace>(bias_name_, out_);
      grad_bias_ = View1<T, ExecSpace>(bias_name_ + ".grad", out_);
    }
  }

  std::string name_, weight_name_, bias_name_;
  int in_ = 0, out_ = 0;
  bool has_bias_ = true;
  matrix weight_, grad_weight_;
  View1<T, ExecSpace> bias_, grad_bias_;
  ConstMatrix<T, ExecSpace> x_;
  matrix y_, dx_;
};

}  // namespace dchag

#endif
