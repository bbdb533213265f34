#ifndef DCHAG_IO_HOST_OUTPUT_HPP
#define DCHAG_IO_HOST_OUTPUT_HPP

// The generators compute on the host and write through raw pointers (contiguous, row-major).
// These helpers let them accept views in any memory space: a host view is written in place,
// a device view through a host mirror that is copied back afterwards.

#include <Kokkos_Core.hpp>
#include <cstddef>
#include <string>
#include <type_traits>

#include <dchag/core/error.hpp>

namespace dchag {
namespace Impl {

template <class View, class T>
void check_output_view_type() {
  static_assert(Kokkos::is_view<View>::value, "generator outputs must be Kokkos views");
  static_assert(std::is_same<typename View::value_type, T>::value,
                "generator output view must hold the generator's (non-const) scalar type");
  static_assert(std::is_same<typename View::array_layout, Kokkos::LayoutRight>::value,
                "generator output views must be LayoutRight (the library's layout)");
}

// Throws unless `v` has exactly the expected extents (listed slowest first).
template <class View>
void require_extents(const char* where, const View& v,
                     std::initializer_list<std::size_t> expected) {
  bool ok = expected.size() == View::rank;
  unsigned r = 0;
  std::string want = "[";
  for (std::size_t e : expected) {
    if (ok && v.extent(r) != e) ok = false;
    want += (r ? ", " : "") + std::to_string(e);
    ++r;
  }
  want += "]";
  require(ok, where, ": output view ", shape_of(v), " has the wrong shape, expected ", want);
  require(v.span_is_contiguous(), where, ": output view ", shape_of(v), " must be contiguous");
}

// Calls write(T* host_pointer) on a host image of v, then makes v hold what was written.
template <class View, class Write>
void write_through_host(const View& v, Write&& write) {
  auto host = Kokkos::create_mirror_view(v);  // v itself when v is host-accessible
  write(host.data());
  Kokkos::deep_copy(v, host);  // a no-op when host aliases v
}

}  // namespace Impl
}  // namespace dchag

#endif
