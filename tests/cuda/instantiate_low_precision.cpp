// CUDA compile check (scripts/cuda_compile_check.sh): the forecasting model on 16-bit storage,
// as instantiate_forecast.cpp does for float: ChannelViT<bf16> under D-CHAG with its trainer
// (float master weights, the loss scaler), AdamW and checkpoints, and the fp16 trainer's
// pieces that bf16 does not use (loss scaling). Compiled, never run.
#include <dchag/dchag.hpp>

#include "instantiate_common.hpp"

namespace dchag {

template class ChannelViT<bf16, CheckSpace, DistributedChannels<LinearAggregator>>;
template class ForecastTrainer<ChannelViT<bf16, CheckSpace, DistributedChannels<LinearAggregator>>>;
DCHAG_INSTANTIATE_CHECKPOINTS(ChannelViT<bf16, CheckSpace, DistributedChannels<LinearAggregator>>)
template class AdamW<bf16, CheckSpace>;
template class AdamW<fp16, CheckSpace>;
template class LossScaler<fp16>;
template class Impl::OptimizerLoop<fp16, CheckSpace>;

}  // namespace dchag
