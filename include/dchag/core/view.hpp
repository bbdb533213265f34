#ifndef DCHAG_CORE_VIEW_HPP
#define DCHAG_CORE_VIEW_HPP

// Tensor types of the library. Everything is LayoutRight (row-major, last index fastest), the
// layout PyTorch and safetensors use, so that weights and activations move without transposes.

#include <Kokkos_Core.hpp>

namespace dchag {

template <class ExecSpace>
using MemorySpace = typename ExecSpace::memory_space;

template <class T, class ExecSpace>
using View1 = Kokkos::View<T*, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;
template <class T, class ExecSpace>
using View2 = Kokkos::View<T**, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;
template <class T, class ExecSpace>
using View3 = Kokkos::View<T***, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;
template <class T, class ExecSpace>
using View4 = Kokkos::View<T****, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;

// A LayoutRight view over memory someone else owns (e.g. a reshape of an activation buffer).
template <class DataType, class ExecSpace>
using Unmanaged = Kokkos::View<DataType, Kokkos::LayoutRight, MemorySpace<ExecSpace>,
                               Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

namespace Impl {
template <class View>
using FlatView = Kokkos::View<typename View::value_type*, typename View::memory_space,
                              Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// The elements of a contiguous view (any rank, any contiguous layout) as one flat array: same
// memory, same constness. Callers check span_is_contiguous() where it can fail.
template <class View>
FlatView<View> flat(const View& v) {
  return FlatView<View>(v.data(), v.size());
}

// Reinterpret a contiguous view as [n0, n1] (n0 * n1 must equal its size; callers check).
template <class View>
auto as_matrix(const View& v, std::size_t n0, std::size_t n1) {
  using T = typename View::value_type;
  return Kokkos::View<T**, Kokkos::LayoutRight, typename View::memory_space,
                      Kokkos::MemoryTraits<Kokkos::Unmanaged>>(v.data(), n0, n1);
}
}  // namespace Impl
}  // namespace dchag

#endif
