#ifndef DCHAG_TRAIN_MAE_TRAINER_HPP
#define DCHAG_TRAIN_MAE_TRAINER_HPP

// One optimisation step of a masked autoencoder (dchag::ChannelMAE), and what it cost:
//   zero grads -> forward (mask drawn from the step number) -> masked MSE against the rank's
//   channels' pixels (summed over TP) -> backward -> average over data-parallel ranks -> clip to the global
//   norm -> AdamW with the warm-up + cosine schedule.

#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/optimizer_loop.hpp>

namespace dchag {

namespace Impl {
template <class ExecSpace, class Model, class Pred, class Target, class Grad>
double mae_loss_unchecked(const ExecSpace& space, const Model& model, const Pred& pred,
                          const Target& target, const Grad& dpred, double loss_scale = 1) {
  double loss = masked_mse_unchecked(space, pred, target, model.mask(), dpred,
                                     double(model.patch_values_total()), loss_scale);
  if (model.distributes_outputs()) loss = all_reduce_sum(model.grid().tp_comm(), loss);
  return loss;
}
}  // namespace Impl

// The masked MSE of a masked autoencoder's last prediction (forward()'s result, under the mask
// model.mask()) against target = mae_target(x) of this rank's input x, with dpred overwritten
// by its gradient: the loss of the whole image, the same on every TP rank. Collective over the
// TP ranks when the model distributes its outputs.
template <class ExecSpace, class Model, class Pred, class Target, class Grad>
double mae_loss(const ExecSpace& space, const Model& model, const Pred& pred,
                const Target& target, const Grad& dpred) {
  const double loss = Impl::mae_loss_unchecked(space, model, pred, target, dpred);
  Impl::require_finite_loss("dchag::mae_loss", loss);
  return loss;
}

// The model is any type with forward(space, x, mask_step) -> [B, L, P], backward(space, dpred),
// mask() [B, L], parameters(), grid(), forward_flops(batch), config(), patch_values_total() and
// distributes_outputs() (dchag::ChannelMAE). Each rank passes its own part of the global batch
// (its dp share of the samples, in rank order) with its own input channels, which are also the
// channels it reconstructs: the target of every rank is its input, and the loss of the whole
// image is the sum of the ranks' shares when the channels are distributed. The mask of step s
// is drawn from (seed, s): a rerun sees the same masks.
template <class Model>
class MaeTrainer {
 public:
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;

  MaeTrainer(Model& model, const TrainConfig& config)
      : model_(model), loop_(model.parameters(), config) {}

  // x [B, channel_count(), H, W]: this rank's channels, input and reconstruction target.
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x) {
    StepReport r = loop_.begin(space);
    const auto pred = model_.forward(space, x, std::uint64_t(r.step));  // checks x
    if (target_.extent(0) != pred.extent(0)) {
      target_ = View3<T, ExecSpace>("mae_target", pred.extent(0), pred.extent(1), pred.extent(2));
      dpred_ = View3<T, ExecSpace>("dprediction", pred.extent(0), pred.extent(1), pred.extent(2));
    }
    mae_target(space, x, model_.config().patch, target_);
    r.loss = Impl::mae_loss_unchecked(space, model_, pred, target_, dpred_, loop_.loss_scale());
    model_.backward(space, dpred_);
    loop_.finish(space, model_.grid(), x.extent(0), model_.forward_flops(x.extent(0)), r);
    return r;
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
