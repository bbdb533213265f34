#ifndef DCHAG_TRAIN_MAE_TRAINER_HPP
#define DCHAG_TRAIN_MAE_TRAINER_HPP

// One optimisation step of a masked autoencoder (dchag::ChannelMAE), and what it cost:
//   zero grads -> forward (mask drawn from the step number) -> masked MSE against every
//   channel's pixels -> backward -> average over data-parallel ranks -> clip to the global
//   norm -> AdamW with the warm-up + cosine schedule.

#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/optimizer_loop.hpp>

namespace dchag {

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
    r.loss = Impl::masked_mse_unchecked(space, pred, target_, model_.mask(), dpred_);
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
  void set_step_count(std::int64_t steps) { loop_.set_step_count(steps); }
  const ParameterList<T, ExecSpace>& parameters() const { return loop_.parameters(); }
  AdamW<T, ExecSpace>& optimizer() { return loop_.optimizer(); }

 private:
  Model& model_;
  Impl::OptimizerLoop<T, ExecSpace> loop_;
  View3<T, ExecSpace> target_, dpred_;
};

}  // namespace dchag

#endif
