#ifndef DCHAG_KERNELS_GELU_HPP
#define DCHAG_KERNELS_GELU_HPP

// Exact (erf) GELU, y = 0.5 x (1 + erf(x / sqrt(2))), torch.nn.GELU's default and the MLP
// activation of ClimaX. Element-wise on contiguous views of any rank: the MLP applies it to
// [tokens, 4D] and the forecast head to [B, L, D] alike. erf and exp are math::fast_erf and
// fast_exp (core/fast_math.hpp): their loops vectorise, where libm's erf runs one element at a
// time.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/fast_math.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/scalar_traits.hpp>
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

// GELU and its slope Phi(v) + v phi(v). Small = true is for |v / sqrt 2| < 1 only, where
// fast_erf takes its first piece: the same bits without evaluating the exp-based second piece,
// which is most of the work.
template <bool Small, class T>
KOKKOS_INLINE_FUNCTION T gelu_erf(T v) {
  const T a = v * T(0.70710678118654752440);
  if constexpr (Small) {
    return erf_inner(a);
  } else {
    return math::fast_erf(a);
  }
}

template <bool Small, class T>
KOKKOS_INLINE_FUNCTION T gelu_value(T v) {
  return T(0.5) * v * (T(1) + gelu_erf<Small>(v));
}

template <bool Small, class T>
KOKKOS_INLINE_FUNCTION T gelu_slope(T v) {
  const T cdf = T(0.5) * (T(1) + gelu_erf<Small>(v));
  const T pdf = T(0.39894228040143267794) * math::fast_exp(T(-0.5) * v * v);
  return cdf + v * pdf;
}

struct GeluForwardOp {
  template <bool Small, class T>
  KOKKOS_INLINE_FUNCTION static T apply(T x, T) {
    return gelu_value<Small>(x);
  }
};
struct GeluBackwardOp {
  template <bool Small, class T>
  KOKKOS_INLINE_FUNCTION static T apply(T x, T dy) {
    return dy * gelu_slope<Small>(x);
  }
};

// out[k] = Op(x[k], dy[k]) on host backends, in blocks of B elements through local arrays: each
// block is loaded, computed and stored in fixed-width loops, which vectorise whether or not out
// aliases an input (in place, a loop over the arrays themselves fails the compiler's overlap
// check and runs one element at a time). A block whose inputs all lie in the first piece of
// fast_erf skips the second. The exact-erf GELU is bound by arithmetic, not memory, at the
// vector widths of a baseline x86-64 build. dy may be null (forward).
template <class Op, class ExecSpace, class T>
void gelu_host(const char* label, const ExecSpace& space, std::int64_t n, const T* x,
               const T* dy, T* out) {
  // 32: eight independent 4-wide vectors per block keep the polynomials' dependent chains
  // overlapped (blocks of 16 measured slower).
  constexpr int B = 32;
  constexpr std::int64_t S = 4096;  // elements per work item, a multiple of B
  Kokkos::parallel_for(
      label, flat_policy(space, std::size_t((n + S - 1) / S)), KOKKOS_LAMBDA(std::int64_t c) {
        const std::int64_t k1 = (c + 1) * S < n ? (c + 1) * S : n;
        std::int64_t k = c * S;
        using C = compute_t<T>;  // a 16-bit T is computed in float
        C v[B], g[B], o[B];
        for (int e = 0; e < B; ++e) g[e] = C(1);
        for (; k + B <= k1; k += B) {
          int big = 0;
          for (int e = 0; e < B; ++e) {
            v[e] = x[k + e];
            // a^2 < 1 in one comparison without a branch; a NaN counts as big, and so may an |a|
            // just below 1 whose square rounds to 1, which the general path handles as well.
            const C a = v[e] * C(0.70710678118654752440);
            big += int(!(a * a < C(1)));
          }
          if (dy)
            for (int e = 0; e < B; ++e) g[e] = dy[k + e];
          if (big) {
            for (int e = 0; e < B; ++e) o[e] = Op::template apply<false>(v[e], g[e]);
          } else {
            for (int e = 0; e < B; ++e) o[e] = Op::template apply<true>(v[e], g[e]);
          }
          for (int e = 0; e < B; ++e) out[k + e] = o[e];
        }
        for (; k < k1; ++k) out[k] = Op::template apply<false>(C(x[k]), dy ? C(dy[k]) : C(1));
      });
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
    Impl::gelu_host<Impl::GeluForwardOp>("dchag::gelu", space, std::int64_t(y.size()), x.data(),
                                         static_cast<const T*>(nullptr), y.data());
  } else {
    Kokkos::parallel_for(
        "dchag::gelu", Impl::flat_policy(space, y.size()),
        KOKKOS_LAMBDA(std::int64_t k) { y(k) = Impl::gelu_value<false>(compute_t<T>(x(k))); });
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
    Impl::gelu_host<Impl::GeluBackwardOp>("dchag::gelu_backward", space, std::int64_t(dx.size()),
                                          x.data(), dy.data(), dx.data());
  } else {
    Kokkos::parallel_for(
        "dchag::gelu_backward", Impl::flat_policy(space, dx.size()),
        KOKKOS_LAMBDA(std::int64_t k) {
          using C = compute_t<T>;
          dx(k) = C(dy(k)) * Impl::gelu_slope<false>(C(x(k)));
        });
  }
}

}  // namespace dchag

#endif
