#ifndef DCHAG_KERNELS_BATCHED_GEMM_HPP
#define DCHAG_KERNELS_BATCHED_GEMM_HPP

// Many small independent products, C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i], as in
// per-(sample, head) attention: scores = Q K^T, context = P V. Operands are rank-3 views
// [batch, rows, cols].
//
// Two implementations: a portable team-level kernel (one team per batch entry and row tile),
// and a loop of KokkosBlas::gemm calls on contiguous slices. On host backends the loop hands
// each product to the optimised BLAS and wins (see benchmarks/kernel_benchmark); on GPUs one
// launch per product would be latency-bound, so the team kernel is used there.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>
#include <dchag/kernels/gemm.hpp>

namespace dchag {
namespace Impl {

template <class T, class AV, class BV, class CV>
struct BatchedGemmTeam {
  AV A;
  BV B;
  CV C;
  T alpha, beta;
  bool ta, tb;
  int rows_per_team, tiles_per_batch;

  KOKKOS_INLINE_FUNCTION T a(int i, int r, int k) const { return ta ? A(i, k, r) : A(i, r, k); }
  KOKKOS_INLINE_FUNCTION T b(int i, int k, int c) const { return tb ? B(i, c, k) : B(i, k, c); }

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank() / tiles_per_batch;
    const int r0 = (team.league_rank() % tiles_per_batch) * rows_per_team;
    const int m = static_cast<int>(C.extent(1));
    const int n = static_cast<int>(C.extent(2));
    const int kdim = ta ? static_cast<int>(A.extent(1)) : static_cast<int>(A.extent(2));
    const int r1 = r0 + rows_per_team < m ? r0 + rows_per_team : m;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, (r1 - r0) * n), [&](int e) {
      const int r = r0 + e / n, c = e % n;
      T acc = 0;
      for (int k = 0; k < kdim; ++k) acc += a(i, r, k) * b(i, k, c);
      C(i, r, c) = alpha * acc + (beta == T(0) ? T(0) : beta * C(i, r, c));
    });
  }
};

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
  using T = typename CV::non_const_value_type;
  Impl::check_batched_gemm("dchag::batched_gemm", opa, opb, A, B, C);
  const int rows = 8;
  const int tiles = static_cast<int>((C.extent(1) + rows - 1) / rows);
  Impl::BatchedGemmTeam<T, AV, BV, CV> f{A, B, C, alpha, beta, opa == Op::T, opb == Op::T,
                                         rows, tiles};
  Kokkos::parallel_for("dchag::batched_gemm_team",
                       Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(C.extent(0)) * tiles,
                                                     Kokkos::AUTO),
                       f);
}

// One BLAS call per batch entry; slices of rank-3 LayoutRight views are contiguous matrices.
template <class ExecSpace, class AV, class BV, class CV>
void batched_gemm_blas(const ExecSpace& space, Op opa, Op opb,
                       typename CV::non_const_value_type alpha, const AV& A, const BV& B,
                       typename CV::non_const_value_type beta, const CV& C) {
  Impl::check_batched_gemm("dchag::batched_gemm", opa, opb, A, B, C);
  space.fence();
  for (std::size_t i = 0; i < C.extent(0); ++i) {
    auto a = Kokkos::subview(A, i, Kokkos::ALL, Kokkos::ALL);
    auto b = Kokkos::subview(B, i, Kokkos::ALL, Kokkos::ALL);
    auto c = Kokkos::subview(C, i, Kokkos::ALL, Kokkos::ALL);
    KokkosBlas::gemm(Impl::blas_char(opa), Impl::blas_char(opb), alpha, a, b, beta, c);
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
