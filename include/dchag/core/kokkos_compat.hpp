#ifndef DCHAG_CORE_KOKKOS_COMPAT_HPP
#define DCHAG_CORE_KOKKOS_COMPAT_HPP

// The one place that knows how Kokkos 3.4 (Debian bookworm) and 4.x differ. Everything else
// in the library calls dchag::math::* inside kernels and names backends through the aliases
// below, so that it compiles unchanged for Serial, OpenMP, CUDA and HIP on either version.

#include <Kokkos_Core.hpp>

namespace dchag {
namespace Impl {
#if KOKKOS_VERSION >= 30700
namespace kmath = ::Kokkos;  // moved out of Experimental in 3.7, old spelling gone by 4.3
#else
namespace kmath = ::Kokkos::Experimental;
#endif
}  // namespace Impl

namespace math {
// float and double only: every kernel in the library is templated on one of them.
template <class T> KOKKOS_INLINE_FUNCTION T exp(T x) { return Impl::kmath::exp(x); }
template <class T> KOKKOS_INLINE_FUNCTION T log(T x) { return Impl::kmath::log(x); }
template <class T> KOKKOS_INLINE_FUNCTION T sqrt(T x) { return Impl::kmath::sqrt(x); }
template <class T> KOKKOS_INLINE_FUNCTION T erf(T x) { return Impl::kmath::erf(x); }
template <class T> KOKKOS_INLINE_FUNCTION T tanh(T x) { return Impl::kmath::tanh(x); }
template <class T> KOKKOS_INLINE_FUNCTION T sin(T x) { return Impl::kmath::sin(x); }
template <class T> KOKKOS_INLINE_FUNCTION T cos(T x) { return Impl::kmath::cos(x); }
template <class T> KOKKOS_INLINE_FUNCTION T pow(T x, T y) { return Impl::kmath::pow(x, y); }
template <class T> KOKKOS_INLINE_FUNCTION T abs(T x) { return x < T(0) ? -x : x; }
template <class T> KOKKOS_INLINE_FUNCTION T max(T a, T b) { return a < b ? b : a; }
template <class T> KOKKOS_INLINE_FUNCTION T min(T a, T b) { return b < a ? b : a; }
template <class T> KOKKOS_INLINE_FUNCTION bool isfinite(T x) { return Impl::kmath::isfinite(x); }
}  // namespace math

#if defined(KOKKOS_ENABLE_HIP)
#if KOKKOS_VERSION >= 40000
using HipExecSpace = ::Kokkos::HIP;
#else
using HipExecSpace = ::Kokkos::Experimental::HIP;
#endif
#endif

namespace Impl {
// concurrency() became an instance member in 4.x; 3.4 only has the static one.
template <class ExecSpace>
int concurrency(const ExecSpace& space) {
#if KOKKOS_VERSION >= 40000
  return space.concurrency();
#else
  (void)space;
  return ExecSpace::concurrency();
#endif
}
}  // namespace Impl
}  // namespace dchag

#endif
