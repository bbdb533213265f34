#ifndef DCHAG_TESTS_CUDA_INSTANTIATE_COMMON_HPP
#define DCHAG_TESTS_CUDA_INSTANTIATE_COMMON_HPP

#include <Kokkos_Core.hpp>

namespace dchag {

// The space the jobs run on (Kokkos::Cuda in the CUDA build). Any backend compiles these files,
// so a host build finds a host-side mistake in minutes rather than after nvcc's long compile.
using CheckSpace = Kokkos::DefaultExecutionSpace;

// Both checkpoint writers and the reader for one model type (variadic: the type has commas).
#define DCHAG_INSTANTIATE_CHECKPOINTS(...)                                                     \
  template void save_checkpoint<__VA_ARGS__>(                                                  \
      const std::string&, const __VA_ARGS__&, const Impl::checkpoint_optimizer_t<__VA_ARGS__>*, \
      std::int64_t, NonFinite);                                                                \
  template void save_checkpoint<__VA_ARGS__>(const std::string&, const __VA_ARGS__&,           \
                                             std::int64_t, NonFinite);                         \
  template CheckpointInfo load_checkpoint<__VA_ARGS__>(                                        \
      const std::string&, __VA_ARGS__&, Impl::checkpoint_optimizer_t<__VA_ARGS__>*, NonFinite);

}  // namespace dchag

#endif
