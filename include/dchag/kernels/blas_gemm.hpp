#ifndef DCHAG_KERNELS_BLAS_GEMM_HPP
#define DCHAG_KERNELS_BLAS_GEMM_HPP

// The BLAS side of the products: Op, the shape checks, and KokkosBlas::gemm on LayoutRight
// matrices (OpenBLAS / cuBLAS / rocBLAS where Kokkos Kernels has the TPL, its own kernels
// otherwise), with the execution-space instance where Kokkos Kernels takes one.

#include <KokkosBlas3_gemm.hpp>
#include <KokkosKernels_config.h>
#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>

namespace dchag {

enum class Op { N, T };

// What alpha and beta are given in: the accumulation type of C's values (float for 16-bit C),
// so that a scale such as 1 / sqrt(head_dim) is not rounded to 16 bits first.
template <class CV>
using gemm_scalar_t = accum_t<typename CV::non_const_value_type>;

namespace Impl {
inline const char* blas_char(Op op) { return op == Op::N ? "N" : "T"; }

template <class V>
std::size_t op_rows(Op op, const V& v) { return op == Op::N ? v.extent(0) : v.extent(1); }
template <class V>
std::size_t op_cols(Op op, const V& v) { return op == Op::N ? v.extent(1) : v.extent(0); }

inline const char* op_name(Op op) { return op == Op::N ? "" : "^T"; }

// Kokkos Kernels 4 takes the execution-space instance: the product is queued behind the work
// already on `space` (a CUDA/HIP stream), with no fence. 3.4 runs it on the default instance,
// so the work queued on `space` must be complete first.
#if defined(KOKKOSKERNELS_VERSION) && KOKKOSKERNELS_VERSION >= 40000
#define DCHAG_BLAS_TAKES_INSTANCE 1
#else
#define DCHAG_BLAS_TAKES_INSTANCE 0
#endif

template <class ExecSpace>
void fence_for_blas(const ExecSpace& space) {
  if constexpr (!DCHAG_BLAS_TAKES_INSTANCE) space.fence();
  (void)space;
}

template <class ExecSpace, class AV, class BV, class CV>
void blas_gemm(const ExecSpace& space, const char* ta, const char* tb,
               typename CV::non_const_value_type alpha, const AV& A, const BV& B,
               typename CV::non_const_value_type beta, const CV& C) {
#if DCHAG_BLAS_TAKES_INSTANCE
  KokkosBlas::gemm(space, ta, tb, alpha, A, B, beta, C);
#else
  (void)space;
  KokkosBlas::gemm(ta, tb, alpha, A, B, beta, C);
#endif
}

template <class AV, class BV, class CV>
void check_gemm(const char* where, Op opa, Op opb, const AV& A, const BV& B, const CV& C) {
  static_assert(AV::rank == 2 && BV::rank == 2 && CV::rank == 2, "gemm takes matrices");
  require_nonempty(where, A);
  require_nonempty(where, B);
  require_nonempty(where, C);
  const bool ok = op_cols(opa, A) == op_rows(opb, B) && op_rows(opa, A) == C.extent(0) &&
                  op_cols(opb, B) == C.extent(1);
  require(ok, where, ": cannot multiply A", op_name(opa), " with A = ", shape_of(A), " by B",
          op_name(opb), " with B = ", shape_of(B), " into C = ", shape_of(C));
}
}  // namespace Impl

}  // namespace dchag

#endif
