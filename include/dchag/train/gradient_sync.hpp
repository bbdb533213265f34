#ifndef DCHAG_TRAIN_GRADIENT_SYNC_HPP
#define DCHAG_TRAIN_GRADIENT_SYNC_HPP

// What turns each rank's local gradients into the gradients of the global batch:
//  - data parallelism: average every gradient over the dp x fsdp ranks that saw other samples.
//    Under model sharding the fsdp sum was already taken by each unit's reduce-scatter, so only
//    the dp group remains: one all-reduce of all gradients packed into one buffer (instead of
//    one small message per parameter), then the division by dp x fsdp;
//  - the global gradient norm: partitioned parameters (each element on one TP rank) add their
//    squares over the TP group, sharded ones over the fsdp group, replicated ones count once.
// 16-bit gradients are packed into a float buffer (accum_t<T>), summed over the ranks in float
// and rounded once when the average is unpacked: no 16-bit partial sums (parallel/collectives.hpp
// says why), and no second conversion inside the collective.

#include <cmath>
#include <type_traits>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/parameter_table.hpp>

namespace dchag {

template <class T, class ExecSpace>
class GradientSync {
 public:
  // Averages the gradients over the data-parallel ranks (nothing to do for dp = fsdp = 1).
  // The gradients of sharded parameters must hold the sum over the fsdp group already.
  // One pack kernel, one all-reduce and one unpack kernel for all parameters; the table and
  // the buffer are kept for the next step's (same) list.
  void average(const ExecSpace& space, const ProcessGrid& grid,
               const ParameterList<T, ExecSpace>& params) {
    const Buffer inverse = Buffer(1) / Buffer(grid.data_size());
    for (const auto& p : params)
      Impl::require(p.sharded == (grid.fsdp() > 1), "dchag::GradientSync: parameter '", p.name,
                    "' is ", p.sharded ? "" : "not ", "sharded but the grid has fsdp = ",
                    grid.fsdp());
    if (grid.data_size() == 1) return;
    table_.update(params);
    if (grid.dp() == 1) {
      scale_grads(space, table_, inverse);
      return;
    }
    const auto total = static_cast<std::size_t>(table_.packed_size());
    if (buffer_.extent(0) != total)
      buffer_ = View1<Buffer, ExecSpace>("dp_gradient_buffer", total);
    if (table_.chunk_count() > 0)
      Kokkos::parallel_for("dchag::GradientSync::pack", table_.policy(space),
                           Impl::TablePack<T, ExecSpace, Buffer>{table_.tensors(),
                                                                 table_.chunks(), buffer_});
    all_reduce_sum(space, grid.dp_comm(), buffer_);
    // The sum times 1 / (dp x fsdp), as a scaling of the buffer followed by a copy would give.
    if (table_.chunk_count() > 0)
      Kokkos::parallel_for("dchag::GradientSync::unpack", table_.policy(space),
                           Impl::TableUnpackScaled<T, ExecSpace, Buffer>{
                               table_.tensors(), table_.chunks(), buffer_, inverse});
  }

 private:
  // T itself for float and double (unchanged), float for 16-bit gradients.
  using Buffer = std::conditional_t<is_low_precision_v<T>, accum_t<T>, T>;
  ParameterTable<T, ExecSpace> table_;
  View1<Buffer, ExecSpace> buffer_;
};

namespace Impl {

// [sharded][partitioned] sums of squares -> the global norm: sum over tp what is partitioned,
// then over fsdp what is sharded.
inline double global_norm_from_kinds(const ProcessGrid& grid, const double (&kinds)[4]) {
  double sums[2][2] = {{kinds[0], kinds[1]}, {kinds[2], kinds[3]}};
  if (grid.tp() > 1)
    for (auto& s : sums) s[1] = all_reduce_sum(grid.tp_comm(), s[1]);
  double sharded = sums[1][0] + sums[1][1];
  if (grid.fsdp() > 1) sharded = all_reduce_sum(grid.fsdp_comm(), sharded);
  return std::sqrt(sums[0][0] + sums[0][1] + sharded);
}

}  // namespace Impl

// The 2-norm of the whole model's gradient, identical on every rank. NaN or Inf anywhere makes
// it non-finite on every rank (the reduction carries it), so every rank fails the same way.
// One reduction over all local gradients (in double), then at most two scalar all-reduces.
template <class T, class ExecSpace>
double global_grad_norm(const ExecSpace& space, const ProcessGrid& grid,
                        const ParameterTable<T, ExecSpace>& table) {
  double kinds[4];
  grad_squares_by_kind(space, table, kinds);
  return Impl::global_norm_from_kinds(grid, kinds);
}

// The same for a list: builds its table first (two small allocations); a training loop keeps
// the table instead (Impl::OptimizerLoop).
template <class T, class ExecSpace>
double global_grad_norm(const ExecSpace& space, const ProcessGrid& grid,
                        const ParameterList<T, ExecSpace>& params) {
  return global_grad_norm(space, grid, ParameterTable<T, ExecSpace>(params));
}

}  // namespace dchag

#endif
