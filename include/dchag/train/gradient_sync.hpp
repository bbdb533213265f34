#ifndef DCHAG_TRAIN_GRADIENT_SYNC_HPP
#define DCHAG_TRAIN_GRADIENT_SYNC_HPP

// What turns each rank's local gradients into the gradients of the global batch:
//  - data parallelism: average every gradient over the dp x fsdp ranks that saw other samples.
//    Under model sharding the fsdp sum was already taken by each unit's reduce-scatter, so only
//    the dp group remains: one all-reduce of all gradients packed into one buffer (instead of
//    one small message per parameter), then the division by dp x fsdp;
//  - the global gradient norm: partitioned parameters (each element on one TP rank) add their
//    squares over the TP group, sharded ones over the fsdp group, replicated ones count once.

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
  // Averages the gradients over the data-parallel ranks (nothing to do for dp = fsdp = 1).
  // The gradients of sharded parameters must hold the sum over the fsdp group already.
  void average(const ExecSpace& space, const ProcessGrid& grid,
               const ParameterList<T, ExecSpace>& params) {
    const T inverse = T(1) / T(grid.data_size());
    for (const auto& p : params)
      Impl::require(p.sharded == (grid.fsdp() > 1), "dchag::GradientSync: parameter '", p.name,
                    "' is ", p.sharded ? "" : "not ", "sharded but the grid has fsdp = ",
                    grid.fsdp());
    if (grid.dp() == 1) {
      if (grid.fsdp() > 1)
        for (const auto& p : params) scale(space, p.grad, inverse);
      return;
    }
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
    scale(space, buffer_, inverse);
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
  // [sharded][partitioned]: sum over tp what is partitioned, then over fsdp what is sharded.
  double sums[2][2] = {{0, 0}, {0, 0}};
  for (const auto& p : params) sums[p.sharded][p.partitioned] += sum_squares(space, p.grad);
  if (grid.tp() > 1)
    for (auto& s : sums) s[1] = all_reduce_sum(grid.tp_comm(), s[1]);
  double sharded = sums[1][0] + sums[1][1];
  if (grid.fsdp() > 1) sharded = all_reduce_sum(grid.fsdp_comm(), sharded);
  return std::sqrt(sums[0][0] + sums[0][1] + sharded);
}

}  // namespace dchag

#endif
