// Must not compile: a partial aggregator without flops() and name(), and a policy without
// owned_channels(), each used in the model. The test passes when the compiler's output names
// the missing members (tests/CMakeLists.txt: concept_messages).
#include <dchag/model/channel_vit.hpp>

#include "incomplete_types.hpp"

using Space = Kokkos::DefaultExecutionSpace;
#if defined(DCHAG_CONCEPT_CASE_POLICY)
template class dchag::ChannelStem<double, Space, incomplete::NoOwnership>;
#else
template class dchag::ChannelAggregation<double, Space, incomplete::NoFlops>;
#endif

int main() { return 0; }
