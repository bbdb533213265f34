#ifndef DCHAG_DCHAG_HPP
#define DCHAG_DCHAG_HPP

// Umbrella header: the whole public interface of dchag, in the order data flows through it.

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/low_precision.hpp>
#include <dchag/core/memory_tracker.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/random.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>

#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/blas_gemm.hpp>
#include <dchag/kernels/blas_info.hpp>
#include <dchag/kernels/channel_rows.hpp>
#include <dchag/kernels/channel_select.hpp>
#include <dchag/kernels/cross_attention.hpp>
#include <dchag/kernels/dropout.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/gemm.hpp>
#include <dchag/kernels/heads.hpp>
#include <dchag/kernels/layer_norm.hpp>
#include <dchag/kernels/masking.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/kernels/residual.hpp>
#include <dchag/kernels/softmax.hpp>
#include <dchag/kernels/team_gemm.hpp>

#include <dchag/layers/cross_attention.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/layers/layer_norm.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/mlp.hpp>
#include <dchag/layers/patch_embed.hpp>
#include <dchag/layers/self_attention.hpp>

#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/hierarchy.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>

#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/parallel/policies.hpp>
#include <dchag/parallel/process_grid.hpp>

#include <dchag/model/channel_stem.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/model/forecast_head.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/model/vit_block.hpp>

#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint.hpp>
#include <dchag/train/climatology.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/loss_scaler.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/mae_trainer.hpp>
#include <dchag/train/metrics.hpp>
#include <dchag/train/optimizer_loop.hpp>
#include <dchag/train/parameter_table.hpp>
#include <dchag/train/plan.hpp>
#include <dchag/train/schedule.hpp>
#include <dchag/train/trainer.hpp>

#include <dchag/io/hyperspectral.hpp>
#include <dchag/io/safetensors.hpp>
#include <dchag/io/weather.hpp>
#if defined(DCHAG_HAVE_NETCDF)
#include <dchag/io/netcdf_file.hpp>
#include <dchag/io/weatherbench.hpp>
#endif

#endif
