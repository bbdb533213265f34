// Must not compile: a partial aggregator without flops() and name(), and a policy without
// owned_channels(), each used in the model. The test passes when the compiler's output names
// the missing members (tests/CMakeLists.txt: concept_messages).
#include <dchag/model/channel_vit.hpp>

#include <string>

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

struct NoOwnership {
  template <class T, class ExecSpace>
  using partial = dchag::LinearAggregator<T, ExecSpace>;
  static const char* name() { return "no ownership"; }
};

using Space = Kokkos::DefaultExecutionSpace;
#if defined(DCHAG_CONCEPT_CASE_POLICY)
template class dchag::ChannelStem<double, Space, NoOwnership>;
#else
template class dchag::ChannelAggregation<double, Space, NoFlops>;
#endif

int main() { return 0; }
