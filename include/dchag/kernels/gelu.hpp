#ifndef DCHAG_KERNELS_GELU_HPP
#define DCHAG_KERNELS_GELU_HPP

// Exact (erf) GELU, y = 0.5 x (1 + erf(x / sqrt(2))), torch.nn.GELU's default and the MLP
// activation of ClimaX. Element-wise on contiguous views of any rank: the MLP applies it to
// [tokens, 4D] and the forecast head to [B, L, D] alike. erf and exp come from
// core/fast_math.hpp: with libm's the loops could not vectorise.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/fast_math.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

template <class AV, class BV>
void check_elementwise(const char* where, const AV& A, const BV& B) {
  static_assert(same_flat_order<AV, BV>(),
                "element-wise kernels need views sharing a LayoutLeft or LayoutRight layout");
  require_nonempty(where, A);
  require_same_shape(where, A, B);
  require_contiguous(where, A);
  require_contiguous(where, B);
}

}  // namespace Impl

// Y = GELU(X); Y may be X.
template <class ExecSpace, class XV, class YV>
void gelu(const ExecSpace& space, const XV& X, const YV& Y) {
  using T = typename YV::non_const_value_type;
  Impl::check_elementwise("dchag::gelu", X, Y);
  const auto x = Impl::flat(X);
  const auto y = Impl::flat(Y);
  Kokkos::parallel_for(
      "dchag::gelu", Impl::flat_policy(space, y.size()), KOKKOS_LAMBDA(std::int64_t k) {
        const T v = x(k);
        y(k) = T(0.5) * v * (T(1) + math::fast_erf(v * T(0.70710678118654752440)));
      });
}

// dX = dY * GELU'(X), GELU'(x) = Phi(x) + x phi(x) with Phi, phi the standard normal cdf and
// density. dX may alias dY.
template <class ExecSpace, class XV, class DYV, class DXV>
void gelu_backward(const ExecSpace& space, const XV& X, const DYV& dY, const DXV& dX) {
  using T = typename DXV::non_const_value_type;
  const char* where = "dchag::gelu_backward";
  Impl::check_elementwise(where, X, dY);
  Impl::check_elementwise(where, X, dX);
  const auto x = Impl::flat(X);
  const auto dy = Impl::flat(dY);
  const auto dx = Impl::flat(dX);
  Kokkos::parallel_for(
      "dchag::gelu_backward", Impl::flat_policy(space, dx.size()),
      KOKKOS_LAMBDA(std::int64_t k) {
        const T v = x(k);
        const T cdf = T(0.5) * (T(1) + math::fast_erf(v * T(0.70710678118654752440)));
        const T pdf = T(0.39894228040143267794) * math::fast_exp(T(-0.5) * v * v);
        dx(k) = dy(k) * (cdf + v * pdf);
      });
}

}  // namespace dchag

#endif
