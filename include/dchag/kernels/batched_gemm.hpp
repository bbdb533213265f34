#ifndef DCHAG_KERNELS_BATCHED_GEMM_HPP
#define DCHAG_KERNELS_BATCHED_GEMM_HPP

// Many small independent products, C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i], as in
// per-(sample, head) attention: scores = Q K^T, context = P V. Operands are rank-3 views
// [batch, rows, cols].
//
// Two implementations: a portable team-level kernel (one team per batch entry and row tile,
// Kokkos Kernels' batched TeamGemm), and a loop of KokkosBlas::gemm calls on contiguous slices. On host backends the loop hands
// each product to the optimised BLAS and wins (see benchmarks/kernel_benchmark); on GPUs one
// launch per product would be latency-bound, so the team kernel is used there.

#include <KokkosBatched_Gemm_Decl.hpp>
#include <KokkosBatched_Gemm_Team_Impl.hpp>
#include <Kokkos_Core.hpp>
#include <type_traits>

#include <dchag/core/error.hpp>
#include <dchag/kernels/gemm.hpp>

namespace dchag {
namespace Impl {

// One team per (batch entry, tile of C's rows): KokkosBatched's team GEMM (register-blocked,
// the team's threads over C's rows and columns) on the matching slices. The tile keeps enough
// teams in flight on a GPU when the batch is small (attention at B * heads of a few dozen) and
// each product is large (L x L scores).
template <class T, class TransA, class TransB, class AV, class BV, class CV>
struct BatchedGemmTeam {
  AV A;
  BV B;
  CV C;
  T alpha, beta;
  int rows_per_team, tiles_per_batch;

  // Rows r of op(A) are rows of A, or columns of A when op is the transpose.
  KOKKOS_INLINE_FUNCTION auto rows_of_op_a(int i, Kokkos::pair<int, int> r,
                                           KokkosBatched::Trans::NoTranspose) const {
    return Kokkos::subview(A, i, r, Kokkos::ALL);
  }
  KOKKOS_INLINE_FUNCTION auto rows_of_op_a(int i, Kokkos::pair<int, int> r,
                                           KokkosBatched::Trans::Transpose) const {
    return Kokkos::subview(A, i, Kokkos::ALL, r);
  }

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank() / tiles_per_batch;
    const int m = static_cast<int>(C.extent(1));
    const int r0 = (team.league_rank() % tiles_per_batch) * rows_per_team;
    const int r1 = r0 + rows_per_team < m ? r0 + rows_per_team : m;
    const auto rows = Kokkos::make_pair(r0, r1);
    const auto a = rows_of_op_a(i, rows, TransA());
    const auto b = Kokkos::subview(B, i, Kokkos::ALL, Kokkos::ALL);
    const auto c = Kokkos::subview(C, i, rows, Kokkos::ALL);
    KokkosBatched::TeamGemm<Member, TransA, TransB, KokkosBatched::Algo::Gemm::Blocked>::invoke(
        team, alpha, a, b, beta, c);
  }
};

template <class TransA, class TransB, class ExecSpace, class AV, class BV, class CV>
void launch_batched_gemm_team(const ExecSpace& space, typename CV::non_const_value_type alpha,
                              const AV& A, const BV& B, typename CV::non_const_value_type beta,
                              const CV& C) {
  using T = typename CV::non_const_value_type;
  // 32 rows: a warp's worth of C rows per team at the head dimensions attention uses (32-128
  // columns), and over a hundred teams at L = 512 even for a batch of one.
  const int rows = 32;
  const int tiles = static_cast<int>((C.extent(1) + rows - 1) / rows);
  // The subviews of A, B and C inside the kernel are strided views of the operands.
  Kokkos::parallel_for("dchag::batched_gemm_team",
                       Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(C.extent(0)) * tiles,
                                                     Kokkos::AUTO),
                       BatchedGemmTeam<T, TransA, TransB, AV, BV, CV>{A, B, C, alpha, beta, rows,
                                                                      tiles});
}

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
                       typename CV::non_const_value_type alpha, const AV& A, const BV& B,
                       typename CV::non_const_value_type beta, const CV& C) {
  using N = KokkosBatched::Trans::NoTranspose;
  using Tr = KokkosBatched::Trans::Transpose;
  Impl::check_batched_gemm("dchag::batched_gemm", opa, opb, A, B, C);
  if (opa == Op::N && opb == Op::N) Impl::launch_batched_gemm_team<N, N>(space, alpha, A, B, beta, C);
  else if (opa == Op::N) Impl::launch_batched_gemm_team<N, Tr>(space, alpha, A, B, beta, C);
  else if (opb == Op::N) Impl::launch_batched_gemm_team<Tr, N>(space, alpha, A, B, beta, C);
  else Impl::launch_batched_gemm_team<Tr, Tr>(space, alpha, A, B, beta, C);
}

// One BLAS call per batch entry; slices of rank-3 LayoutRight views are contiguous matrices.
template <class ExecSpace, class AV, class BV, class CV>
void batched_gemm_blas(const ExecSpace& space, Op opa, Op opb,
                       typename CV::non_const_value_type alpha, const AV& A, const BV& B,
                       typename CV::non_const_value_type beta, const CV& C) {
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
void batched_gemm(const ExecSpace& space, Op opa, Op opb, typename CV::non_const_value_type alpha,
                  const AV& A, const BV& B, typename CV::non_const_value_type beta,
                  const CV& C) {
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace,
                                                   typename ExecSpace::memory_space>::accessible;
  constexpr bool right = std::is_same<typename AV::array_layout, Kokkos::LayoutRight>::value &&
                         std::is_same<typename BV::array_layout, Kokkos::LayoutRight>::value &&
                         std::is_same<typename CV::array_layout, Kokkos::LayoutRight>::value;
  if constexpr (host && right) {
    batched_gemm_blas(space, opa, opb, alpha, A, B, beta, C);
  } else {
    batched_gemm_team(space, opa, opb, alpha, A, B, beta, C);
  }
}

}  // namespace dchag

#endif
