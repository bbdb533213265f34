#ifndef DCHAG_KERNELS_BATCHED_GEMM_HPP
#define DCHAG_KERNELS_BATCHED_GEMM_HPP

// Many small independent products, C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i], as in
// per-(sample, head) attention: scores = Q K^T, context = P V. Operands are rank-3 views
// [batch, rows, cols].
//
// Two implementations: a portable team-level kernel (one team per batch entry and tile of C,
// the tile's operands staged in team scratch, each thread a register-blocked micro-tile), and a
// loop of KokkosBlas::gemm calls on contiguous slices. On host backends the loop hands each
// product to the optimised BLAS and wins (see benchmarks/kernel_benchmark); on GPUs one launch
// per product would be latency-bound, so the team kernel is used there.
// The team kernel is kernels/team_gemm.hpp.

#include <Kokkos_Core.hpp>
#include <cstddef>
#include <type_traits>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/blas_gemm.hpp>
#include <dchag/kernels/team_gemm.hpp>

namespace dchag {
namespace Impl {

template <class AV, class BV, class CV>
void check_batched_gemm(const char* where, Op opa, Op opb, const AV& A, const BV& B,
                        const CV& C) {
  static_assert(AV::rank == 3 && BV::rank == 3 && CV::rank == 3,
                "batched gemm takes [batch, rows, cols] views");
  require_nonempty(where, A);
  require_nonempty(where, B);
  require_nonempty(where, C);
  const std::size_t ar = opa == Op::N ? A.extent(1) : A.extent(2);
  const std::size_t ac = opa == Op::N ? A.extent(2) : A.extent(1);
  const std::size_t br = opb == Op::N ? B.extent(1) : B.extent(2);
  const std::size_t bc = opb == Op::N ? B.extent(2) : B.extent(1);
  const bool ok = A.extent(0) == C.extent(0) && B.extent(0) == C.extent(0) && ac == br &&
                  ar == C.extent(1) && bc == C.extent(2);
  require(ok, where, ": cannot multiply batches A", op_name(opa), " with A = ", shape_of(A),
          " by B", op_name(opb), " with B = ", shape_of(B), " into C = ", shape_of(C));
}

}  // namespace Impl

// Portable team-level form; any layout, including strided views.
template <class ExecSpace, class AV, class BV, class CV>
void batched_gemm_team(const ExecSpace& space, Op opa, Op opb,
                       gemm_scalar_t<CV> alpha, const AV& A, const BV& B,
                       gemm_scalar_t<CV> beta, const CV& C) {
  Impl::check_batched_gemm("dchag::batched_gemm", opa, opb, A, B, C);
  Impl::batched_gemm_team_tiled<Impl::BatchedGemmTiling<ExecSpace>>(space, opa, opb, alpha, A, B,
                                                                    beta, C);
}

// One BLAS call per batch entry; slices of rank-3 LayoutRight views are contiguous matrices.
template <class ExecSpace, class AV, class BV, class CV>
void batched_gemm_blas(const ExecSpace& space, Op opa, Op opb,
                       gemm_scalar_t<CV> alpha, const AV& A, const BV& B,
                       gemm_scalar_t<CV> beta, const CV& C) {
  Impl::check_batched_gemm("dchag::batched_gemm", opa, opb, A, B, C);
  Impl::fence_for_blas(space);
  for (std::size_t i = 0; i < C.extent(0); ++i) {
    auto a = Kokkos::subview(A, i, Kokkos::ALL, Kokkos::ALL);
    auto b = Kokkos::subview(B, i, Kokkos::ALL, Kokkos::ALL);
    auto c = Kokkos::subview(C, i, Kokkos::ALL, Kokkos::ALL);
    Impl::blas_gemm(space, Impl::blas_char(opa), Impl::blas_char(opb), alpha, a, b, beta, c);
  }
}

template <class ExecSpace, class AV, class BV, class CV>
void batched_gemm(const ExecSpace& space, Op opa, Op opb,
                  gemm_scalar_t<CV> alpha,
                  const AV& A, const BV& B, gemm_scalar_t<CV> beta,
                  const CV& C) {
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace,
                                                   typename ExecSpace::memory_space>::accessible;
  constexpr bool right = std::is_same<typename AV::array_layout, Kokkos::LayoutRight>::value &&
                         std::is_same<typename BV::array_layout, Kokkos::LayoutRight>::value &&
                         std::is_same<typename CV::array_layout, Kokkos::LayoutRight>::value;
  // BLAS has no 16-bit products here: those run in the team kernel, accumulating in float.
  if constexpr (host && right && !is_low_precision_v<typename CV::non_const_value_type>) {
    batched_gemm_blas(space, opa, opb, alpha, A, B, beta, C);
  } else {
    batched_gemm_team(space, opa, opb, alpha, A, B, beta, C);
  }
}

}  // namespace dchag

#endif
