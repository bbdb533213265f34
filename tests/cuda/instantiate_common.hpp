#ifndef DCHAG_TESTS_CUDA_INSTANTIATE_COMMON_HPP
#define DCHAG_TESTS_CUDA_INSTANTIATE_COMMON_HPP

#include <Kokkos_Core.hpp>

namespace dchag {

// The space the jobs run on (Kokkos::Cuda in the CUDA build). Any backend compiles these files,
// so a host build finds a host-side mistake in minutes rather than after nvcc's long compile.
using CheckSpace = Kokkos::DefaultExecutionSpace;

}  // namespace dchag

#endif
