#ifndef DCHAG_LAYERS_MLP_HPP
#define DCHAG_LAYERS_MLP_HPP

// timm's Mlp: fc1 (dim -> hidden), exact GELU, drop1, fc2 (hidden -> dim). drop1 is the
// dropout after the activation (kernels/dropout.hpp), given per forward and off unless asked
// for; timm's drop2 after fc2 belongs to the caller, which adds fc2's bias (Block).

#include <cstdint>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/dropout.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/parallel_linear.hpp>

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
        total_hidden_(total_hidden > 0 ? total_hidden : hidden) {
    Impl::require(dim > 0 && hidden > 0, "Mlp '", name_,
                  "': dim and hidden must be positive, got dim = ", dim, ", hidden = ", hidden);
    Impl::require(hidden_begin >= 0 && hidden_begin + hidden <= total_hidden_, "Mlp '", name_,
                  "': hidden units [", hidden_begin, ", ", hidden_begin + hidden,
                  ") do not fit in total_hidden = ", total_hidden_);
    const SplitRange hidden_split{hidden_begin, hidden, total_hidden_};
    fc1_ = ColumnParallelLinear<T, ExecSpace>(name_ + ".fc1", dim, hidden_split);
    fc2_ = RowParallelLinear<T, ExecSpace>(name_ + ".fc2", hidden_split, dim, defer_fc2_bias);
  }

  // timm / ClimaX: weights trunc_normal(std), biases zero, drawn for the logical layer.
  void init(std::uint64_t seed, double std = 0.02) {
    fc1_.init_truncated_normal(seed, std);
    fc2_.init_truncated_normal(seed, std);
  }

  // drop1: the dropout after GELU, on rows of `tokens` tokens per sample, the first of global
  // sample sample_begin; its masks are keyed by the logical hidden unit, so that a slice of the
  // hidden layer (tensor parallelism) drops what the whole layer drops there.
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x,
                 const DropoutSite& drop1 = {}, std::size_t tokens = 1,
                 std::uint64_t sample_begin = 0) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Mlp '", name_, "': input ",
                  Impl::shape_of(x), " has ", x.extent(1), " features, expected ", dim());
    h_ = fc1_.forward(space, x);
    if (a_.extent(0) != h_.extent(0)) a_ = matrix(name_ + ".act", h_.extent(0), hidden());
    gelu(space, h_, a_);
    drop1_ = drop1;
    tokens_ = tokens;
    sample_begin_ = sample_begin;
    // In place: fc2's weight gradient needs the dropped activations, not the GELU output.
    if (drop1_.active())
      dropout(space, drop1_, a_, a_, tokens_, sample_begin_, std::uint64_t(hidden_begin_));
    return fc2_.forward(space, a_);
  }

  // y += fc2.bias; only for a layer constructed with defer_fc2_bias.
  template <class YView>
  void add_output_bias(const ExecSpace& space, const YView& y) const {
    fc2_.add_bias(space, y);
  }

  // Accumulates the parameter gradients; returns dL/dx (empty when not asked for).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    matrix da = fc2_.backward(space, dy);  // checks dy against the forward shape first
    // The forward's drop1 mask, regenerated; then fc2's own dx buffer, free until its next
    // backward, takes dL/dh.
    if (drop1_.active())
      dropout(space, drop1_, da, da, tokens_, sample_begin_, std::uint64_t(hidden_begin_));
    gelu_backward(space, h_, da, da);
    return fc1_.backward(space, da, input_grad);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    fc1_.visit_storage(f);
    fc2_.visit_storage(f);
  }

  // fc1.weight, fc1.bias, fc2.weight, fc2.bias, each this layer's part of the logical tensor
  // (parallel_linear.hpp).
  void parameters(ParameterList<T, ExecSpace>& list) const {
    fc1_.parameters(list);
    fc2_.parameters(list);
  }

  // The two products (GELU and the bias are O(rows * hidden) and not counted).
  double flops(std::size_t rows) const { return fc1_.flops(rows) + fc2_.flops(rows); }

  const ColumnParallelLinear<T, ExecSpace>& fc1() const { return fc1_; }
  const RowParallelLinear<T, ExecSpace>& fc2() const { return fc2_; }
  const vector& fc2_bias() const { return fc2_.bias(); }
  const vector& grad_fc2_bias() const { return fc2_.grad_bias(); }
  int dim() const { return fc1_.in_features(); }
  int hidden() const { return fc1_.out_features(); }
  bool defers_fc2_bias() const { return fc2_.skips_bias_add(); }
  int hidden_begin() const { return hidden_begin_; }
  int total_hidden() const { return total_hidden_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int hidden_begin_ = 0, total_hidden_ = 0;
  ColumnParallelLinear<T, ExecSpace> fc1_;
  RowParallelLinear<T, ExecSpace> fc2_;
  matrix h_, a_;
  DropoutSite drop1_;  // of the last forward
  std::size_t tokens_ = 1;
  std::uint64_t sample_begin_ = 0;
};

}  // namespace dchag

#endif
