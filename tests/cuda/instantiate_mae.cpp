// CUDA compile check (scripts/cuda_compile_check.sh): explicit instantiations of the masked
// autoencoder, its trainer and its checkpoints under every partitioning policy the library's jobs use (see
// instantiate_forecast.cpp for why whole classes are instantiated). Compiled, never run.
#include <dchag/dchag.hpp>

#include <cstdint>
#include <string>

#include "instantiate_common.hpp"

namespace dchag {

#define DCHAG_INSTANTIATE_MAE(POLICY)                               \
  template class ChannelMAE<float, CheckSpace, POLICY>;            \
  template class MaeTrainer<ChannelMAE<float, CheckSpace, POLICY>>; \
  DCHAG_INSTANTIATE_CHECKPOINTS(ChannelMAE<float, CheckSpace, POLICY>)

DCHAG_INSTANTIATE_MAE(TensorParallel)
DCHAG_INSTANTIATE_MAE(DistributedChannels<LinearAggregator>)
DCHAG_INSTANTIATE_MAE(DistributedChannels<CrossAttentionAggregator>)

}  // namespace dchag
