#ifndef DCHAG_TRAIN_GRADIENT_SYNC_HPP
#define DCHAG_TRAIN_GRADIENT_SYNC_HPP

// What turns each rank's local gradients into the gradients of the global batch:
//  - data parallelism: average every gradient over the dp group (one all-reduce of all
//    gradients packed into one buffer, instead of one small message per parameter);
//  - the global gradient norm: partitioned parameters (each element on one TP rank) add their
//    squares over the TP group, replicated ones count once.

#include <cmath>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/process_grid.hpp>

namespace dchag {

template <class T, class ExecSpace>
class GradientSync {
 public:
  // Averages the gradients over the data-parallel group (nothing to do for dp = 1).
  void average_over_dp(const ExecSpace& space, const ProcessGrid& grid,
                       const ParameterList<T, ExecSpace>& params) {
    if (grid.dp() == 1) return;
    std::size_t total = 0;
    for (const auto& p : params) total += p.size();
    if (buffer_.extent(0) != total) buffer_ = View1<T, ExecSpace>("dp_gradient_buffer", total);
    std::size_t offset = 0;
    for (const auto& p : params) {
      Kokkos::deep_copy(space, Kokkos::subview(buffer_, Kokkos::make_pair(offset, offset + p.size())),
                        p.grad);
      offset += p.size();
    }
    all_reduce_sum(space, grid.dp_comm(), buffer_);
    scale(space, buffer_, T(1) / T(grid.dp()));
    offset = 0;
    for (const auto& p : params) {
      Kokkos::deep_copy(space, p.grad,
                        Kokkos::subview(buffer_, Kokkos::make_pair(offset, offset + p.size())));
      offset += p.size();
    }
  }

 private:
  View1<T, ExecSpace> buffer_;
};

// The 2-norm of the whole model's gradient, identical on every rank. NaN or Inf anywhere makes
// it non-finite on every rank (the reduction carries it), so every rank fails the same way.
template <class T, class ExecSpace>
double global_grad_norm(const ExecSpace& space, const ProcessGrid& grid,
                        const ParameterList<T, ExecSpace>& params) {
  double partitioned = 0, replicated = 0;
  for (const auto& p : params) (p.partitioned ? partitioned : replicated) += sum_squares(space, p.grad);
  if (grid.tp() > 1) partitioned = all_reduce_sum(grid.tp_comm(), partitioned);
  return std::sqrt(partitioned + replicated);
}

}  // namespace dchag

#endif
