// Types that almost model the library's concepts, each missing what its comment says: the
// traits must reject them (tests/parallel/test_user_extensions.cpp) and using them must fail to
// compile with a message naming the member (missing_member.cpp).
#ifndef DCHAG_TESTS_CONCEPTS_INCOMPLETE_TYPES_HPP
#define DCHAG_TESTS_CONCEPTS_INCOMPLETE_TYPES_HPP

#include <dchag/aggregation/linear_aggregator.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>

#include <cstdint>
#include <string>

namespace incomplete {

// A partial aggregator without flops() and name().
template <class T, class ExecSpace>
struct NoFlops {
  NoFlops() = default;
  NoFlops(std::string, int, int, int, int, int) {}
  void init(std::uint64_t, double) {}
  dchag::View3<T, ExecSpace> forward(const ExecSpace&, const dchag::ConstTensor3<T, ExecSpace>&);
  dchag::View3<T, ExecSpace> backward(const ExecSpace&, const dchag::ConstTensor3<T, ExecSpace>&,
                                      bool);
  void parameters(dchag::ParameterList<T, ExecSpace>&) const {}
  template <class F>
  void visit_storage(F&&) {}
};

// A partitioning policy without owned_channels().
struct NoOwnership {
  template <class T, class ExecSpace>
  using partial = dchag::LinearAggregator<T, ExecSpace>;
  static const char* name() { return "no ownership"; }
};

}  // namespace incomplete

#endif
