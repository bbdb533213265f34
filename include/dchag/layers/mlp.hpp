#ifndef DCHAG_LAYERS_MLP_HPP
#define DCHAG_LAYERS_MLP_HPP

// timm's Mlp: fc1 (dim -> hidden), exact GELU, fc2 (hidden -> dim).

#include <cstdint>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class Mlp {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;

  Mlp() = default;
  // defer_fc2_bias: forward() leaves out fc2's bias, which the caller adds with
  // add_output_bias() once it has summed the partial outputs (Megatron's row-parallel fc2
  // under tensor parallelism). The bias stays a parameter of this layer either way, and
  // backward() is the same in both modes.
  // hidden_begin, total_hidden: this layer's hidden units within the logical layer
  // (total_hidden 0: the layer is whole); they only decide which parts of the logical weights
  // init() produces.
  Mlp(std::string name, int dim, int hidden, bool defer_fc2_bias = false, int hidden_begin = 0,
      int total_hidden = 0)
      : name_(std::move(name)), hidden_begin_(hidden_begin),
        total_hidden_(total_hidden > 0 ? total_hidden : hidden), defer_bias_(defer_fc2_bias) {
    Impl::require(dim > 0 && hidden > 0, "Mlp '", name_,
                  "': dim and hidden must be positive, got dim = ", dim, ", hidden = ", hidden);
    Impl::require(hidden_begin >= 0 && hidden_begin + hidden <= total_hidden_, "Mlp '", name_,
                  "': hidden units [", hidden_begin, ", ", hidden_begin + hidden,
                  ") do not fit in total_hidden = ", total_hidden_);
    fc1_ = Linear<T, ExecSpace>(name_ + ".fc1", dim, hidden);
    fc2_ = Linear<T, ExecSpace>(name_ + ".fc2", hidden, dim, /*bias=*/false);
    bias_ = vector(name_ + ".fc2.bias", dim);
    grad_bias_ = vector(name_ + ".fc2.bias.grad", dim);
  }

  // timm / ClimaX: weights trunc_normal(std), biases zero, drawn for the logical layer
  // (fc1.weight [total_hidden, dim], fc2.weight [dim, total_hidden]) so that a layer holding
  // some of the hidden units gets exactly its part of what the whole layer gets.
  void init(std::uint64_t seed, double std = 0.02) {
    const std::size_t D = dim(), begin = hidden_begin_;
    truncated_normal(fc1_.weight(), seed, stream_id(name_ + ".fc1.weight"), std,
                     -2 * std, 2 * std, begin * D);
    Kokkos::deep_copy(fc1_.bias(), T(0));
    const LogicalSlice columns{{D, std::size_t(total_hidden_)}, {0, begin}};
    truncated_normal(fc2_.weight(), seed, stream_id(name_ + ".fc2.weight"), std,
                     -2 * std, 2 * std, columns);
    Kokkos::deep_copy(bias_, T(0));
  }

  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Mlp '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", dim());
    h_ = fc1_.forward(space, x);
    if (a_.extent(0) != h_.extent(0)) a_ = matrix(name_ + ".act", h_.extent(0), hidden());
    gelu(space, h_, a_);
    matrix y = fc2_.forward(space, a_);
    if (!defer_bias_) add_bias(space, y, bias_);
    return y;
  }

  // y += fc2.bias; only for a layer constructed with defer_fc2_bias.
  template <class YView>
  void add_output_bias(const ExecSpace& space, const YView& y) const {
    add_bias(space, y, bias_);
  }

  // Accumulates the parameter gradients; returns dL/dx (empty when not asked for).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    matrix da = fc2_.backward(space, dy);  // checks dy against the forward shape first
    sum_rows(space, dy, grad_bias_);
    // fc2 hands out its own dx buffer, free until its next backward: take it for dL/dh.
    gelu_backward(space, h_, da, da);
    return fc1_.backward(space, da, input_grad);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    fc1_.visit_storage(f);
    fc2_.visit_storage(f);
    f(bias_, grad_bias_);
  }

  // A layer holding some of the hidden units registers its part of the logical tensors under
  // their logical names and shapes: a block of fc1 rows (weight and bias) and a block of fc2
  // columns. fc2's bias is added after the ranks' partial outputs are summed, so every rank
  // holds all of it.
  void parameters(ParameterList<T, ExecSpace>& list) const {
    if (total_hidden_ == hidden()) {
      fc1_.parameters(list);
      fc2_.parameters(list);
    } else {
      const std::size_t D = dim(), n = hidden(), begin = hidden_begin_, total = total_hidden_;
      Impl::add_partitioned_parameter<T, ExecSpace>(
          list, fc1_.name() + ".weight", {total, D}, {LogicalBox{{begin, 0}, {n, D}}},
          fc1_.weight(), fc1_.grad_weight(), true);
      Impl::add_partitioned_parameter<T, ExecSpace>(
          list, fc1_.name() + ".bias", {total}, {LogicalBox{{begin}, {n}}}, fc1_.bias(),
          fc1_.grad_bias(), false);
      Impl::add_partitioned_parameter<T, ExecSpace>(
          list, fc2_.name() + ".weight", {D, total}, {LogicalBox{{0, begin}, {D, n}}},
          fc2_.weight(), fc2_.grad_weight(), true);
    }
    Impl::add_parameter<T, ExecSpace>(list, name_ + ".fc2.bias", bias_, grad_bias_, false);
  }

  // The two products (GELU and the bias are O(rows * hidden) and not counted).
  double flops(std::size_t rows) const { return fc1_.flops(rows) + fc2_.flops(rows); }

  const Linear<T, ExecSpace>& fc1() const { return fc1_; }
  // fc2's weight; its bias is fc2_bias() (kept out of the Linear so that it can be deferred).
  const Linear<T, ExecSpace>& fc2() const { return fc2_; }
  const vector& fc2_bias() const { return bias_; }
  const vector& grad_fc2_bias() const { return grad_bias_; }
  int dim() const { return fc1_.in_features(); }
  int hidden() const { return fc1_.out_features(); }
  bool defers_fc2_bias() const { return defer_bias_; }
  int hidden_begin() const { return hidden_begin_; }
  int total_hidden() const { return total_hidden_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int hidden_begin_ = 0, total_hidden_ = 0;
  bool defer_bias_ = false;
  Linear<T, ExecSpace> fc1_, fc2_;
  vector bias_, grad_bias_;
  matrix h_, a_;
};

}  // namespace dchag

#endif
