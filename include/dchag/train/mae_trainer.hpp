#ifndef DCHAG_TRAIN_MAE_TRAINER_HPP
#define DCHAG_TRAIN_MAE_TRAINER_HPP

// One optimisation step of a masked autoencoder (dchag::ChannelMAE), and what it cost:
//   zero grads -> forward (mask drawn from the step number) -> masked MSE against every
//   channel's pixels -> backward -> average over data-parallel ranks -> clip to the global
//   norm -> AdamW with the warm-up + cosine schedule.
//
// The half of a step that does not depend on the model or the loss (everything before the
// forward and after the backward) is Impl::OptimizerLoop below; ForecastTrainer
// (train/trainer.hpp) does the same sequence inline and could be written on it.

#include <chrono>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/memory_tracker.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/schedule.hpp>
#include <dchag/train/trainer.hpp>

namespace dchag {
namespace Impl {

inline AdamWConfig adamw_from_train_config(const TrainConfig& c) {
  AdamWConfig a;
  a.lr = c.lr;
  a.beta2 = c.beta2;
  a.weight_decay = c.weight_decay;
  return a;
}

// The model-independent frame of a training step over a fixed parameter list: begin() zeroes
// the gradients and starts the clock; finish(), after the model's backward, averages the
// gradients (and the loss) over dp, clips to the global norm, takes the AdamW step at the
// scheduled rate and fills in the report.
template <class T, class ExecSpace>
class OptimizerLoop {
 public:
  OptimizerLoop(ParameterList<T, ExecSpace> params, const TrainConfig& config)
      : config_(config),
        params_(std::move(params)),
        optimizer_(adamw_from_train_config(config)),
        schedule_(config.lr, config.warmup_steps, config.steps, config.warmup_start_lr,
                  config.min_lr) {
    optimizer_.initialize(params_);
  }

  StepReport begin(const ExecSpace& space) {
    t0_ = std::chrono::steady_clock::now();
    StepReport r;
    r.step = step_;
    r.lr = schedule_.lr(step_);
    zero_grad(space, params_);
    return r;
  }

  // r.loss is this rank's loss on its `local_batch` samples; forward_flops the model's count
  // for them.
  void finish(const ExecSpace& space, const ProcessGrid& grid, std::size_t local_batch,
              double forward_flops, StepReport& r) {
    sync_.average_over_dp(space, grid, params_);
    if (grid.dp() > 1) r.loss = all_reduce_sum(grid.dp_comm(), r.loss) / grid.dp();
    r.grad_norm = global_grad_norm(space, grid, params_);
    apply_grad_clip(space, params_, config_.max_grad_norm, r.grad_norm);
    optimizer_.step(space, params_, r.lr);
    space.fence();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    // Samples of the global batch per second; FLOPs this rank executed (forward + backward ~
    // 3x the forward: two GEMMs per forward GEMM).
    r.samples_per_second = double(local_batch) * grid.dp() / r.seconds;
    r.gflops_per_second = 3.0 * forward_flops / r.seconds * 1e-9;
    r.peak_bytes = MemoryTracker::peak_total_bytes();
    ++step_;
  }

  std::int64_t step_count() const { return step_; }
  const ParameterList<T, ExecSpace>& parameters() const { return params_; }
  AdamW<T, ExecSpace>& optimizer() { return optimizer_; }

 private:
  TrainConfig config_;
  ParameterList<T, ExecSpace> params_;
  AdamW<T, ExecSpace> optimizer_;
  WarmupCosine schedule_;
  GradientSync<T, ExecSpace> sync_;
  std::chrono::steady_clock::time_point t0_;
  std::int64_t step_ = 0;
};

}  // namespace Impl

// The model is any type with forward(space, x, mask_step) -> [B, L, P], backward(space, dpred),
// mask() [B, L], parameters(), grid(), forward_flops(batch), channel_count() and config()
// (dchag::ChannelMAE). Each rank passes its own part of the global batch (its dp share of the
// samples, in rank order) with its own input channels, and every channel of those samples as
// the reconstruction target. The mask of step s is drawn from (seed, s): a rerun sees the same
// masks.
template <class Model>
class MaeTrainer {
 public:
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;

  MaeTrainer(Model& model, const TrainConfig& config)
      : model_(model), loop_(model.parameters(), config) {}

  // x_local [B, channel_count(), H, W]: this rank's channels; x_full [B, C, H, W]: every
  // channel of the same samples, the reconstruction target.
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x_local,
                  const View4<T, ExecSpace>& x_full) {
    const ModelConfig& c = model_.config();
    Impl::require(x_full.extent(0) == x_local.extent(0) &&
                      x_full.extent(1) == std::size_t(c.channels) &&
                      x_full.extent(2) == std::size_t(c.height) &&
                      x_full.extent(3) == std::size_t(c.width),
                  "MaeTrainer: target image ", Impl::shape_of(x_full), " must be [",
                  x_local.extent(0), ", ", c.channels, ", ", c.height, ", ", c.width,
                  "]: every channel of the samples of the input ", Impl::shape_of(x_local));
    StepReport r = loop_.begin(space);
    const auto pred = model_.forward(space, x_local, std::uint64_t(r.step));
    if (target_.extent(0) != pred.extent(0)) {
      target_ = View3<T, ExecSpace>("mae_target", pred.extent(0), pred.extent(1), pred.extent(2));
      dpred_ = View3<T, ExecSpace>("dprediction", pred.extent(0), pred.extent(1), pred.extent(2));
    }
    mae_target(space, x_full, c.patch, target_);
    r.loss = masked_mse(space, pred, target_, model_.mask(), dpred_);
    model_.backward(space, dpred_);
    loop_.finish(space, model_.grid(), x_local.extent(0), model_.forward_flops(x_local.extent(0)),
                 r);
    return r;
  }

  // When this rank reads every channel (one TP rank, or channels replicated over TP), the input
  // is its own target.
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x) {
    Impl::require(model_.channel_count() == model_.config().channels,
                  "MaeTrainer: this rank reads ", model_.channel_count(), " of ",
                  model_.config().channels,
                  " channels; pass the full image as the target: step(space, x_local, x_full)");
    return step(space, x, x);
  }

  std::int64_t step_count() const { return loop_.step_count(); }
  const ParameterList<T, ExecSpace>& parameters() const { return loop_.parameters(); }
  AdamW<T, ExecSpace>& optimizer() { return loop_.optimizer(); }

 private:
  Model& model_;
  Impl::OptimizerLoop<T, ExecSpace> loop_;
  View3<T, ExecSpace> target_, dpred_;
};

}  // namespace dchag

#endif
