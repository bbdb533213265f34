#ifndef DCHAG_CORE_ERROR_HPP
#define DCHAG_CORE_ERROR_HPP

#include <sstream>
#include <stdexcept>
#include <string>

namespace dchag {

// The one exception type the library throws for bad input or impossible configurations.
// Headers never abort: a user's long training run must be able to catch, report and save.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace Impl {

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

// The message is only formatted when the check fails, so checks are cheap on the hot path.
template <class... Args>
void require(bool ok, const Args&... message) {
  if (!ok) throw Error(concat(message...));
}

// "label[2, 3, 4]": how every shape appears in our error messages.
template <class View>
std::string shape_of(const View& v) {
  std::ostringstream out;
  out << '\'' << v.label() << "'[";
  for (unsigned r = 0; r < View::rank; ++r) out << (r ? ", " : "") << v.extent(r);
  out << ']';
  return out.str();
}

template <class View>
void require_nonempty(const char* where, const View& v) {
  require(v.size() > 0, where, ": view ", shape_of(v), " is empty");
}

}  // namespace Impl
}  // namespace dchag

#endif
