#ifndef DCHAG_LAYERS_PARALLEL_LINEAR_HPP
#define DCHAG_LAYERS_PARALLEL_LINEAR_HPP

// Megatron-LM's tensor-parallel linear layers (Shoeybi et al., arXiv 1909.08053, section 3):
//   ColumnParallelLinear  holds a block of the output features (rows of W [out, in], and of b);
//                         its outputs are this rank's features, its input gradient a partial
//                         sum over the ranks;
//   RowParallelLinear     holds a block of the input features (columns of W); its outputs are
//                         partial sums over the ranks, and the bias, whole on every rank, is
//                         added once after they are summed (skip_bias_add + add_bias()).
// An attention layer is the pair (qkv column-parallel in three sections q|k|v, proj
// row-parallel), an MLP the pair (fc1, fc2), with one all-reduce between them and the next layer
// (done by the caller: these layers never communicate, so they stay in the layers folder and
// are tested on one rank).
//
// Each owns what a split layer must get right once: the logical-offset initialisation (a block
// gets exactly the values the whole layer would draw for it, so every grid starts from the same
// function) and the parameter boxes (its part registered under the logical name and shape, so
// checkpoints and the optimiser see one model whatever the partition). With the whole range
// they are plain nn.Linear layers.

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/random.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

// The block [begin, begin + count) of a dimension of `total` features that a layer holds.
struct SplitRange {
  int begin = 0;
  int count = 0;
  int total = 0;
  static SplitRange whole(int n) { return {0, n, n}; }
  bool is_whole() const { return count == total; }
};

namespace Impl {
inline SplitRange checked_split(const SplitRange& r, const std::string& name, const char* what) {
  require(r.count > 0 && r.begin >= 0 && r.begin + r.count <= r.total, name, ": ", what, " [",
          r.begin, ", ", r.begin + r.count, ") are not a non-empty part of [0, ", r.total, ")");
  return r;
}
}  // namespace Impl

template <class T, class ExecSpace>
class ColumnParallelLinear {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;

  ColumnParallelLinear() = default;
  // `sections` stacked blocks (q|k|v: 3): the logical weight is [sections * out.total, in] and
  // this layer holds rows [s * out.total + out.begin, +out.count) of every section s.
  ColumnParallelLinear(std::string name, int in_features, SplitRange out, int sections = 1)
      : ColumnParallelLinear(name + ".weight", name + ".bias", in_features, out, sections) {}
  ColumnParallelLinear(std::string weight_name, std::string bias_name, int in_features,
                       SplitRange out, int sections)
      : split_(Impl::checked_split(out, weight_name, "output features")), sections_(sections),
        local_(std::move(weight_name), std::move(bias_name), in_features, sections * out.count,
               true) {
    Impl::require(sections > 0, local_.weight_name(), ": sections = ", sections,
                  " must be positive");
  }

  // trunc_normal(std, a = -2, b = 2) over the logical weight (timm / ClimaX), bias zero.
  void init_truncated_normal(std::uint64_t seed, double std) {
    const std::uint64_t stream = stream_id(local_.weight_name());
    for (int s = 0; s < sections_; ++s)
      truncated_normal(section(s), seed, stream, std, trunc_normal_default_a,
                       trunc_normal_default_b, logical_offset(s));
    Kokkos::deep_copy(local_.bias(), T(0));
  }
  // uniform [lo, hi) over the logical weight (PyTorch's xavier_uniform_), bias zero.
  void init_uniform(std::uint64_t seed, double lo, double hi) {
    const std::uint64_t stream = stream_id(local_.weight_name());
    for (int s = 0; s < sections_; ++s)
      uniform(section(s), seed, stream, lo, hi, logical_offset(s));
    Kokkos::deep_copy(local_.bias(), T(0));
  }

  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x) {
    return local_.forward(space, x);
  }
  // dL/dx is this rank's share of a sum over the ranks (the caller all-reduces it).
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    return local_.backward(space, dy, input_grad);
  }

  template <class F>
  void visit_storage(F&& f) {
    local_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    if (split_.is_whole()) return local_.parameters(list);
    const std::size_t in = in_features(), n = split_.count, total = split_.total;
    std::vector<LogicalBox> rows, entries;
    for (std::size_t s = 0; s < std::size_t(sections_); ++s) {
      rows.push_back({{s * total + split_.begin, 0}, {n, in}});
      entries.push_back({{s * total + split_.begin}, {n}});
    }
    const std::size_t logical = std::size_t(sections_) * total;
    Impl::add_partitioned_parameter<T, ExecSpace>(list, local_.weight_name(), {logical, in},
                                                  std::move(rows), weight(), grad_weight(), true);
    Impl::add_partitioned_parameter<T, ExecSpace>(list, local_.bias_name(), {logical},
                                                  std::move(entries), bias(), grad_bias(), false);
  }

  double flops(std::size_t rows) const { return local_.flops(rows); }

  // Local storage: [sections * split().count, in].
  const matrix& weight() const { return local_.weight(); }
  const vector& bias() const { return local_.bias(); }
  const matrix& grad_weight() const { return local_.grad_weight(); }
  const vector& grad_bias() const { return local_.grad_bias(); }
  const matrix& output() const { return local_.output(); }
  int in_features() const { return local_.in_features(); }
  int out_features() const { return local_.out_features(); }
  int sections() const { return sections_; }
  const SplitRange& split() const { return split_; }
  const std::string& name() const { return local_.name(); }

 private:
  Unmanaged<T**, ExecSpace> section(int s) const {
    const std::size_t n = split_.count, in = in_features();
    return Unmanaged<T**, ExecSpace>(weight().data() + std::size_t(s) * n * in, n, in);
  }
  std::uint64_t logical_offset(int s) const {
    return (std::uint64_t(s) * split_.total + split_.begin) * std::uint64_t(in_features());
  }

  SplitRange split_;
  int sections_ = 1;
  Linear<T, ExecSpace> local_;
};

template <class T, class ExecSpace>
class RowParallelLinear {
 public:
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;

  RowParallelLinear() = default;
  // skip_bias_add: forward() leaves the bias out; the caller sums the ranks' partial outputs
  // and then calls add_bias(), so the bias is added once. backward() is the same either way
  // (the output gradient is whole on every rank, hence so is the bias gradient).
  RowParallelLinear(std::string name, SplitRange in, int out_features, bool skip_bias_add = false)
      : split_(Impl::checked_split(in, name, "input features")),
        skip_bias_add_(skip_bias_add),
        local_(name, in.count, out_features, /*bias=*/false),
        bias_name_(name + ".bias"),
        bias_(bias_name_, out_features),
        grad_bias_(name + ".bias.grad", out_features) {}

  // trunc_normal(std, a = -2, b = 2) over the logical weight [out, in.total], bias zero.
  void init_truncated_normal(std::uint64_t seed, double std) {
    const LogicalSlice columns{{std::size_t(out_features()), std::size_t(split_.total)},
                               {0, std::size_t(split_.begin)}};
    truncated_normal(local_.weight(), seed, stream_id(local_.weight_name()), std,
                     trunc_normal_default_a, trunc_normal_default_b, columns);
    Kokkos::deep_copy(bias_, T(0));
  }

  // This rank's partial output (plus the bias unless skipped).
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x) {
    matrix y = local_.forward(space, x);
    if (!skip_bias_add_) add_bias(space, y);
    return y;
  }

  // y += bias, for the summed output of a layer built with skip_bias_add.
  template <class YView>
  void add_bias(const ExecSpace& space, const YView& y) const {
    ::dchag::add_bias(space, y, bias_);
  }

  // Accumulates the weight and bias gradients; returns dL/dx for this rank's input features.
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy,
                  bool input_grad = true) {
    matrix dx = local_.backward(space, dy, input_grad);  // checks dy against the forward shape
    sum_rows(space, dy, grad_bias_);
    return dx;
  }

  template <class F>
  void visit_storage(F&& f) {
    local_.visit_storage(f);
    f(bias_, grad_bias_);
  }

  // The weight's column block under its logical shape; the bias whole (every rank holds it).
  void parameters(ParameterList<T, ExecSpace>& list) const {
    if (split_.is_whole()) {
      local_.parameters(list);
    } else {
      const std::size_t out = out_features(), n = split_.count;
      Impl::add_partitioned_parameter<T, ExecSpace>(
          list, local_.weight_name(), {out, std::size_t(split_.total)},
          {LogicalBox{{0, std::size_t(split_.begin)}, {out, n}}}, weight(), grad_weight(), true);
    }
    Impl::add_parameter<T, ExecSpace>(list, bias_name_, bias_, grad_bias_, false);
  }

  double flops(std::size_t rows) const { return local_.flops(rows); }

  // Local storage: [out, split().count] and [out].
  const matrix& weight() const { return local_.weight(); }
  const vector& bias() const { return bias_; }
  const matrix& grad_weight() const { return local_.grad_weight(); }
  const vector& grad_bias() const { return grad_bias_; }
  int in_features() const { return local_.in_features(); }
  int out_features() const { return local_.out_features(); }
  bool skips_bias_add() const { return skip_bias_add_; }
  const SplitRange& split() const { return split_; }
  const std::string& name() const { return local_.name(); }

 private:
  SplitRange split_;
  bool skip_bias_add_ = false;
  Linear<T, ExecSpace> local_;
  std::string bias_name_;
  vector bias_, grad_bias_;
};

}  // namespace dchag

#endif
