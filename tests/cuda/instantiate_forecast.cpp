// CUDA compile check (scripts/cuda_compile_check.sh): explicit instantiations of the forecasting
// model and what trains and saves it, in every instantiation the library's jobs use. An explicit
// class instantiation compiles every member function, so nvcc sees each kernel the model can
// launch, not only those one test happens to call; a host-only call in a kernel, a constexpr
// host function (std::max) in device code or an extended lambda in a private member function
// fails here (the first two only with the preset's --Werror=all-warnings: nvcc merely warns).
// Compiled, never run.
#include <dchag/dchag.hpp>

#include <cstdint>
#include <string>

#include "instantiate_common.hpp"

namespace dchag {

#define DCHAG_INSTANTIATE_FORECAST(POLICY)                               \
  template class ChannelViT<float, CheckSpace, POLICY>;                  \
  template class ForecastTrainer<ChannelViT<float, CheckSpace, POLICY>>; \
  DCHAG_INSTANTIATE_CHECKPOINTS(ChannelViT<float, CheckSpace, POLICY>)

DCHAG_INSTANTIATE_FORECAST(TensorParallel)
DCHAG_INSTANTIATE_FORECAST(DistributedChannels<LinearAggregator>)
DCHAG_INSTANTIATE_FORECAST(DistributedChannels<CrossAttentionAggregator>)

template class AdamW<float, CheckSpace>;
template void zero_grad<float, CheckSpace>(const CheckSpace&,
                                           const ParameterList<float, CheckSpace>&);
template std::vector<double> lat_weighted_rmse<CheckSpace>(const CheckSpace&,
                                                           const View4<float, CheckSpace>&,
                                                           const View4<float, CheckSpace>&,
                                                           const View1<float, CheckSpace>&);

}  // namespace dchag
