#ifndef DCHAG_KERNELS_GEMM_HPP
#define DCHAG_KERNELS_GEMM_HPP

// C = alpha * op(A) * op(B) + beta * C on matrices: through BLAS (kernels/blas_gemm.hpp) for
// float and double, through the library's team kernel (kernels/team_gemm.hpp) for 16-bit
// values, which BLAS does not take: it reads them, multiplies and adds in float, and rounds C
// once.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/blas_gemm.hpp>
#include <dchag/kernels/team_gemm.hpp>

namespace dchag {

namespace Impl {
// A matrix as a batch of one, with its strides: any rank-2 view, any layout.
template <class V>
auto as_batch_of_one(const V& v) {
  using Out = Kokkos::View<typename V::value_type***, Kokkos::LayoutStride,
                           typename V::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const Kokkos::LayoutStride layout(1, v.span(), v.extent(0), v.stride(0), v.extent(1),
                                    v.stride(1));
  return Out(v.data(), layout);
}
}  // namespace Impl

template <class ExecSpace, class AV, class BV, class CV>
void gemm(const ExecSpace& space, Op opa, Op opb, gemm_scalar_t<CV> alpha,
          const AV& A, const BV& B, gemm_scalar_t<CV> beta,
          const CV& C) {
  Impl::check_gemm("dchag::gemm", opa, opb, A, B, C);
  if constexpr (is_low_precision_v<typename CV::non_const_value_type>) {
    Impl::batched_gemm_team_tiled<Impl::BatchedGemmTiling<ExecSpace>>(
        space, opa, opb, alpha, Impl::as_batch_of_one(A), Impl::as_batch_of_one(B), beta,
        Impl::as_batch_of_one(C));
  } else {
    Impl::fence_for_blas(space);
    Impl::blas_gemm(space, Impl::blas_char(opa), Impl::blas_char(opb), alpha, A, B, beta, C);
  }
}

}  // namespace dchag

#endif
