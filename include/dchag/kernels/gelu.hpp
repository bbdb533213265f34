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

// Element-wise f over chunks of the flat arrays on host backends: the compiler vectorises a
// plain loop over pointers (with its own check for overlap, as Y may be X), not the loop over
// a flat index that the policy drives one call at a time.
template <class ExecSpace, class F>
void host_chunks(const char* name, const ExecSpace& space, std::int64_t n, const F& f) {
  constexpr std::int64_t S = 4096;
  Kokkos::parallel_for(
      name, flat_policy(space, std::size_t((n + S - 1) / S)), KOKKOS_LAMBDA(std::int64_t c) {
        const std::int64_t k1 = (c + 1) * S < n ? (c + 1) * S : n;
        f(c * S, k1);
      });
}

template <class T>
KOKKOS_INLINE_FUNCTION T gelu_value(T v) {
  return T(0.5) * v * (T(1) + math::fast_erf(v * T(0.70710678118654752440)));
}

template <class T>
KOKKOS_INLINE_FUNCTION T gelu_slope(T v) {
  const T cdf = T(0.5) * (T(1) + math::fast_erf(v * T(0.70710678118654752440)));
  const T pdf = T(0.39894228040143267794) * math::fast_exp(T(-0.5) * v * v);
  return cdf + v * pdf;
}

}  // namespace Impl

// Y = GELU(X); Y may be X.
template <class ExecSpace, class XV, class YV>
void gelu(const ExecSpace& space, const XV& X, const YV& Y) {
  using T = typename YV::non_const_value_type;
  Impl::check_elementwise("dchag::gelu", X, Y);
  const auto x = Impl::flat(X);
  const auto y = Impl::flat(Y);
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    const T* xp = x.data();
    T* yp = y.data();
    Impl::host_chunks("dchag::gelu", space, std::int64_t(y.size()),
                      [=](std::int64_t k0, std::int64_t k1) {
                        for (std::int64_t k = k0; k < k1; ++k) yp[k] = Impl::gelu_value(xp[k]);
                      });
  } else {
    Kokkos::parallel_for(
        "dchag::gelu", Impl::flat_policy(space, y.size()),
        KOKKOS_LAMBDA(std::int64_t k) { y(k) = Impl::gelu_value(x(k)); });
  }
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
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    const T* xp = x.data();
    const T* dyp = dy.data();
    T* dxp = dx.data();
    Impl::host_chunks("dchag::gelu_backward", space, std::int64_t(dx.size()),
                      [=](std::int64_t k0, std::int64_t k1) {
                        for (std::int64_t k = k0; k < k1; ++k)
                          dxp[k] = dyp[k] * Impl::gelu_slope(xp[k]);
                      });
  } else {
    Kokkos::parallel_for(
        "dchag::gelu_backward", Impl::flat_policy(space, dx.size()),
        KOKKOS_LAMBDA(std::int64_t k) { dx(k) = dy(k) * Impl::gelu_slope(x(k)); });
  }
}

}  // namespace dchag

#endif
