#ifndef DCHAG_AGGREGATION_LINEAR_AGGREGATOR_HPP
#define DCHAG_AGGREGATION_LINEAR_AGGREGATOR_HPP

// D-CHAG-L partial aggregator: each group of `group_size` contiguous tokens (channels, or the
// group tokens of the level below) is reduced to one token by nn.Linear(group_size, 1) applied
// across the token axis,
//   out[g, n, :] = sum_c w[g, c] T[g*group_size + c, n, :] + b[g].
// Parameters per group, with the GLOBAL group index: "{prefix}.{g}.weight" [1, group_size] and
// "{prefix}.{g}.bias" [1].
// A model of the partial-aggregator concept (aggregation/aggregator.hpp); heads is unused.

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/aggregation/aggregator.hpp>
#include <dchag/core/view.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/layers/embeddings.hpp>

namespace dchag {

namespace Impl {

// dw(g, c) += sum_{n,d} dout(g, n, d) T(g*Gs + c, n, d) and db(g) += sum_{n,d} dout(g, n, d).
// Each (g, c) is one dot product over N*D contiguous elements (c = Gs stands for the bias), and
// a single work item computes it, so no two threads add to the same element and the sum's
// order is fixed. On host backends an item is a vectorised loop over the two rows; on GPUs an
// item is a team reducing over the row. (Free functions: CUDA refuses lambdas in private
// members.)
template <class ExecSpace, class XV, class DYV, class GWV, class GBV>
void linear_aggregator_gradients(const ExecSpace& space, const XV& x, const DYV& dout,
                                 const GWV& gw, const GBV& gb) {
  using T = typename GWV::non_const_value_type;
  using A = accum_t<T>;
  const std::int64_t Gs = static_cast<std::int64_t>(gw.extent(1));
  const std::int64_t ND = static_cast<std::int64_t>(dout.extent(1) * dout.extent(2));
  const int items = static_cast<int>(gw.extent(0) * (gw.extent(1) + 1));
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    Kokkos::parallel_for(
        "dchag::LinearAggregator::dweight", Kokkos::RangePolicy<ExecSpace>(space, 0, items),
        KOKKOS_LAMBDA(int item) {
          const std::int64_t g = item / (Gs + 1), c = item % (Gs + 1);
          const T* dy = dout.data() + g * ND;
          if (c < Gs) {
            const T* xr = x.data() + (g * Gs + c) * ND;
            gw(g, c) += Impl::sum_interleaved<A>(
                ND, [&](std::int64_t e) { return A(dy[e]) * A(xr[e]); });
          } else {
            gb(g) += Impl::sum_interleaved<A>(ND, [&](std::int64_t e) { return A(dy[e]); });
          }
        });
  } else {
    using Policy = Kokkos::TeamPolicy<ExecSpace>;
    using Member = typename Policy::member_type;
    Kokkos::parallel_for(
        "dchag::LinearAggregator::dweight", Policy(space, items, Kokkos::AUTO),
        KOKKOS_LAMBDA(const Member& team) {
          const std::int64_t g = team.league_rank() / (Gs + 1), c = team.league_rank() % (Gs + 1);
          const T* dy = dout.data() + g * ND;
          const T* xr = x.data() + (g * Gs + (c < Gs ? c : 0)) * ND;
          A s = 0;
          Kokkos::parallel_reduce(
              Kokkos::TeamThreadRange(team, ND),
              [&](std::int64_t e, A& acc) { acc += c < Gs ? A(dy[e]) * A(xr[e]) : A(dy[e]); },
              s);
          Kokkos::single(Kokkos::PerTeam(team), [&]() {
            if (c < Gs)
              gw(g, c) += s;
            else
              gb(g) += s;
          });
        });
  }
}

// out(g, :) = b(g) + sum_c w(g, c) T(g*Gs + c, :), each token slice [N*D] read once. The sums
// run over c in blocks of output elements held in accum_t<T> (float for a 16-bit T, which would
// otherwise round at every one of the Gs terms).
template <class ExecSpace, class XV, class YV, class WV, class BV>
void linear_aggregator_forward(const ExecSpace& space, const XV& x, const YV& y, const WV& w,
                               const BV& b) {
  using T = typename YV::non_const_value_type;
  using A = accum_t<T>;
  const std::int64_t Gs = static_cast<std::int64_t>(w.extent(1));
  const std::int64_t ND = static_cast<std::int64_t>(y.extent(1) * y.extent(2));
  Impl::for_each_row_segment(
      "dchag::LinearAggregator::forward", space, y.extent(0), std::size_t(ND),
      KOKKOS_LAMBDA(std::int64_t g, std::int64_t j0, std::int64_t j1) {
        constexpr std::int64_t Block = 64;
        T* yr = y.data() + g * ND;
        for (std::int64_t j = j0; j < j1; j += Block) {
          const std::int64_t m = j1 - j < Block ? j1 - j : Block;
          A acc[Block];
          for (std::int64_t k = 0; k < m; ++k) acc[k] = A(b(g));
          for (std::int64_t c = 0; c < Gs; ++c) {
            const A wc = w(g, c);
            const T* xr = x.data() + (g * Gs + c) * ND + j;
            for (std::int64_t k = 0; k < m; ++k) acc[k] += wc * A(xr[k]);
          }
          for (std::int64_t k = 0; k < m; ++k) yr[j + k] = acc[k];
        }
      });
}

// dT(c, :) = w(c / Gs, c % Gs) * dout(c / Gs, :).
template <class ExecSpace, class DYV, class DXV, class WV>
void linear_aggregator_input_grad(const ExecSpace& space, const DYV& dout, const DXV& dx,
                                  const WV& w) {
  using T = typename DXV::non_const_value_type;
  const std::int64_t Gs = static_cast<std::int64_t>(w.extent(1));
  const std::int64_t ND = static_cast<std::int64_t>(dx.extent(1) * dx.extent(2));
  Impl::for_each_row_segment(
      "dchag::LinearAggregator::dx", space, dx.extent(0), std::size_t(ND),
      KOKKOS_LAMBDA(std::int64_t c, std::int64_t j0, std::int64_t j1) {
        const compute_t<T> wc = w(c / Gs, c % Gs);
        const T* dy = dout.data() + (c / Gs) * ND;
        T* dxr = dx.data() + c * ND;
        for (std::int64_t j = j0; j < j1; ++j) dxr[j] = wc * dy[j];
      });
}

}  // namespace Impl

template <class T, class ExecSpace>
class LinearAggregator {
 public:
  using tensor = View3<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;

  LinearAggregator() = default;
  LinearAggregator(std::string prefix, int groups, int group_size, int dim, int /*heads*/ = 1,
                   int group_begin = 0)
      : prefix_(std::move(prefix)), groups_(groups), group_size_(group_size), dim_(dim),
        begin_(group_begin) {
    Impl::require(groups > 0 && group_size > 0 && dim > 0 && group_begin >= 0,
                  "LinearAggregator '", prefix_,
                  "': need groups, group_size, dim > 0 and group_begin >= 0, got groups = ",
                  groups, ", group_size = ", group_size, ", dim = ", dim,
                  ", group_begin = ", group_begin);
    weight_ = matrix(prefix_ + ".weight", groups_, group_size_);
    grad_weight_ = matrix(prefix_ + ".weight.grad", groups_, group_size_);
    bias_ = vector(prefix_ + ".bias", groups_);
    grad_bias_ = vector(prefix_ + ".bias.grad", groups_);
  }

  // As every nn.Linear under ClimaX's _init_weights: weight trunc_normal(std), bias zero.
  void init(std::uint64_t seed, double std = 0.02) {
    for (int g = 0; g < groups_; ++g)
      truncated_normal(weight_row(weight_, g), seed, stream_id(param_name(g, "weight")),
                       std);
    Kokkos::deep_copy(bias_, T(0));
  }

  // tokens must stay alive until backward().
  tensor forward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& tokens) {
    Impl::require(tokens.extent(0) == std::size_t(groups_) * group_size_ &&
                      tokens.extent(2) == std::size_t(dim_) && tokens.extent(1) > 0,
                  "LinearAggregator '", prefix_, "': input ", Impl::shape_of(tokens), " must be [",
                  groups_, " groups x ", group_size_, " = ", groups_ * group_size_, ", N, ", dim_,
                  "]");
    x_ = tokens;
    const std::size_t N = tokens.extent(1);
    if (out_.extent(1) != N) out_ = tensor(prefix_ + ".out", groups_, N, dim_);
    Impl::linear_aggregator_forward(space, x_, out_, weight_, bias_);
    return out_;
  }

  // Accumulates the weight and bias gradients; returns dL/dtokens (empty when not asked).
  tensor backward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& dout,
                  bool input_grad = true) {
    Impl::require(out_.extent(1) > 0, "LinearAggregator '", prefix_,
                  "': backward() before forward()");
    Impl::require(dout.extent(0) == out_.extent(0) && dout.extent(1) == out_.extent(1) &&
                      dout.extent(2) == out_.extent(2),
                  "LinearAggregator '", prefix_, "': output gradient ", Impl::shape_of(dout),
                  " does not match the forward output ", Impl::shape_of(out_));
    Impl::linear_aggregator_gradients(space, x_, dout, grad_weight_, grad_bias_);
    if (!input_grad) return tensor();
    if (dx_.extent(1) != x_.extent(1)) dx_ = tensor(prefix_ + ".dx", x_.extent(0), x_.extent(1), dim_);
    Impl::linear_aggregator_input_grad(space, dout, dx_, weight_);
    return dx_;
  }

  // backward() with dL/dtokens written over the tokens forward() read: each weight gradient
  // reads the tokens before the input gradient (a function of dout and the weights only)
  // overwrites them.
  void backward_in_place(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& dout,
                         const Unmanaged<T***, ExecSpace>& tokens) {
    Impl::require(tokens.data() == x_.data() && tokens.extent(0) == x_.extent(0) &&
                      tokens.extent(1) == x_.extent(1) && tokens.extent(2) == x_.extent(2),
                  "LinearAggregator '", prefix_, "': backward_in_place() is given ",
                  Impl::shape_of(tokens), ", not the tokens of the last forward()");
    backward(space, dout, /*input_grad=*/false);
    Impl::linear_aggregator_input_grad(space, dout, tokens, weight_);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_weight_);
    f(bias_, grad_bias_);
  }

  // Per group, as nn.Linear(group_size, 1) names them.
  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (int g = 0; g < groups_; ++g) {
      Impl::add_parameter<T, ExecSpace>(list, param_name(g, "weight"), weight_row(weight_, g),
                                        weight_row(grad_weight_, g), true);
      Impl::add_parameter<T, ExecSpace>(list, param_name(g, "bias"),
                                        Unmanaged<T*, ExecSpace>(bias_.data() + g, 1),
                                        Unmanaged<T*, ExecSpace>(grad_bias_.data() + g, 1), false);
    }
  }

  double flops(std::size_t rows) const {
    return 2.0 * groups_ * group_size_ * double(rows) * dim_;
  }

  static const char* name() { return "linear"; }

  // [groups, group_size] and [groups]: row g is group group_begin + g.
  const matrix& weight() const { return weight_; }
  const vector& bias() const { return bias_; }
  const matrix& grad_weight() const { return grad_weight_; }
  const vector& grad_bias() const { return grad_bias_; }
  int groups() const { return groups_; }
  int group_size() const { return group_size_; }
  int group_begin() const { return begin_; }
  int dim() const { return dim_; }
  const std::string& prefix() const { return prefix_; }

 private:
  std::string param_name(int g, const char* what) const {
    return Impl::concat(prefix_, '.', begin_ + g, '.', what);
  }
  Unmanaged<T**, ExecSpace> weight_row(const matrix& w, int g) const {
    return Unmanaged<T**, ExecSpace>(w.data() + std::size_t(g) * group_size_, 1, group_size_);
  }

  std::string prefix_;
  int groups_ = 0, group_size_ = 0, dim_ = 0, begin_ = 0;
  matrix weight_, grad_weight_;
  vector bias_, grad_bias_;
  ConstTensor3<T, ExecSpace> x_;
  tensor out_, dx_;
};

}  // namespace dchag

#endif
