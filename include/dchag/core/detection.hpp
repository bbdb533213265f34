#ifndef DCHAG_CORE_DETECTION_HPP
#define DCHAG_CORE_DETECTION_HPP

// The detection idiom (std::experimental::is_detected, which C++17 lacks): the concepts of the
// library (aggregation/aggregator.hpp, parallel/policy.hpp) test each required member on its
// own, so that a type missing one is told which, in a static_assert, instead of in a page of
// template errors from deep inside the model.

#include <type_traits>

namespace dchag {
namespace Impl {

template <class, template <class...> class Op, class... Args>
struct Detector : std::false_type {};
template <template <class...> class Op, class... Args>
struct Detector<std::void_t<Op<Args...>>, Op, Args...> : std::true_type {};

// True when Op<Args...> names a valid type (an expression's decltype, usually).
template <template <class...> class Op, class... Args>
constexpr bool is_detected = Detector<void, Op, Args...>::value;

// True when Op<Args...> is valid and converts to To.
template <class To, template <class...> class Op, class... Args>
constexpr bool is_detected_convertible() {
  if constexpr (is_detected<Op, Args...>)
    return std::is_convertible<Op<Args...>, To>::value;
  else
    return false;
}

}  // namespace Impl
}  // namespace dchag

#endif
