#ifndef DCHAG_MODEL_FORECAST_HEAD_HPP
#define DCHAG_MODEL_FORECAST_HEAD_HPP

// ClimaX's prediction head: decoder_depth x [Linear(D, D), GELU], Linear(D, C*p*p) predicting
// every input variable, unpatchify to [B, C, H, W], then the output variables' channels
// (`preds[:, out_var_ids]` in ClimaX) as the prediction [B, C_out, H, W]. Named as ClimaX's
// nn.Sequential: head.0, head.2, ... are the Linears (the GELUs at odd indices have no
// parameters), the last Linear is head.{2*depth}. The gradient of the variables not predicted
// is zero: they shape the weights only as far as ClimaX's own head does.

#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/channel_select.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class ForecastHead {
 public:
  using matrix = View2<T, ExecSpace>;
  using image = View4<T, ExecSpace>;

  ForecastHead() = default;
  // channels: the variables the last Linear predicts; outputs: the channel of each output
  // variable, distinct, in the order of the prediction.
  ForecastHead(int dim, int channels, const std::vector<int>& outputs, int patch,
               int decoder_depth)
      : channels_(channels), out_channels_(static_cast<int>(outputs.size())), patch_(patch) {
    Impl::require(channels > 0 && out_channels_ > 0 && patch > 0 && decoder_depth >= 0,
                  "ForecastHead: channels (", channels, "), outputs (", out_channels_,
                  ") and patch (", patch, ") must be positive and decoder_depth (", decoder_depth,
                  ") non-negative");
    std::vector<int> slot(channels, -1);
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const int c = outputs[k];
      Impl::require(c >= 0 && c < channels && slot[c] < 0, "ForecastHead: output ", k,
                    " is channel ", c, ", expected a channel in [0, ", channels,
                    ") not already an output");
      slot[c] = static_cast<int>(k);
      identity_ = identity_ && c == static_cast<int>(k);
    }
    identity_ = identity_ && out_channels_ == channels;
    if (!identity_) {
      ids_ = Kokkos::View<int*, MemorySpace<ExecSpace>>("head.output_ids", outputs.size());
      slots_ = Kokkos::View<int*, MemorySpace<ExecSpace>>("head.output_slots", slot.size());
      Kokkos::deep_copy(ids_, Kokkos::View<const int*, Kokkos::HostSpace,
                                           Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                                  outputs.data(), outputs.size()));
      Kokkos::deep_copy(slots_, Kokkos::View<const int*, Kokkos::HostSpace,
                                             Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                                    slot.data(), slot.size()));
    }
    for (int i = 0; i < decoder_depth; ++i)
      hidden_.emplace_back("head." + std::to_string(2 * i), dim, dim);
    acts_.resize(decoder_depth);
    out_ = Linear<T, ExecSpace>("head." + std::to_string(2 * decoder_depth), dim,
                                channels * patch * patch);
  }

  void init(std::uint64_t seed) {
    for (auto& l : hidden_) l.init(seed);
    out_.init(seed);
  }

  // tokens [B*L, D] -> prediction [B, C_out, H, W] (of every variable: full_prediction())
  image forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& tokens, int batch,
                int height, int width) {
    ConstMatrix<T, ExecSpace> x = tokens;
    for (std::size_t i = 0; i < hidden_.size(); ++i) {
      auto pre = hidden_[i].forward(space, x);
      if (acts_[i].extent(0) != pre.extent(0))
        acts_[i] = matrix("head.gelu", pre.extent(0), pre.extent(1));
      gelu(space, pre, acts_[i]);
      x = acts_[i];
    }
    auto y = out_.forward(space, x);
    if (full_.extent(0) != std::size_t(batch) || full_.extent(2) != std::size_t(height) ||
        full_.extent(3) != std::size_t(width)) {
      full_ = image("prediction.all_variables", batch, channels_, height, width);
      pred_ = identity_ ? full_ : image("prediction", batch, out_channels_, height, width);
    }
    unpatchify(space, y, patch_, full_);
    if (!identity_) select_channels(space, full_, ids_, pred_);
    return pred_;
  }

  // The last forward's prediction of every input variable, [B, C, H, W].
  image full_prediction() const { return full_; }

  // dL/dprediction -> dL/dtokens
  matrix backward(const ExecSpace& space, const image& dpred) {
    Impl::require(dpred.extent(0) == pred_.extent(0) && dpred.extent(1) == pred_.extent(1) &&
                      dpred.extent(2) == pred_.extent(2) && dpred.extent(3) == pred_.extent(3),
                  "ForecastHead: gradient ", Impl::shape_of(dpred),
                  " does not match the prediction ", Impl::shape_of(pred_));
    const std::size_t rows = pred_.extent(0) * (pred_.extent(2) / patch_) *
                             (pred_.extent(3) / patch_);
    if (dy_.extent(0) != rows) dy_ = matrix("head.dy", rows, out_.out_features());
    if (identity_) {
      patchify(space, dpred, patch_, dy_);
    } else {
      if (dfull_.extent(0) != full_.extent(0) || dfull_.extent(2) != full_.extent(2) ||
          dfull_.extent(3) != full_.extent(3))
        dfull_ = image("head.dprediction", full_.extent(0), full_.extent(1), full_.extent(2),
                       full_.extent(3));
      scatter_channels(space, dpred, slots_, dfull_);
      patchify(space, dfull_, patch_, dy_);
    }
    matrix d = out_.backward(space, dy_);
    for (std::size_t i = hidden_.size(); i-- > 0;) {
      // gelu_backward reads the pre-activation the Linear returned in forward.
      gelu_backward(space, hidden_pre(i), d, d);
      d = hidden_[i].backward(space, d);
    }
    return d;
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    for (auto& l : hidden_) l.visit_storage(f);
    out_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (auto& l : hidden_) l.parameters(list);
    out_.parameters(list);
  }

  double flops(std::size_t rows) const {
    double f = out_.flops(rows);
    for (auto& l : hidden_) f += l.flops(rows);
    return f;
  }

 private:
  // The Linear keeps its output buffer until its next forward: that is the GELU's input.
  matrix hidden_pre(std::size_t i) const { return hidden_[i].output(); }

  int channels_ = 0, out_channels_ = 0, patch_ = 0;
  bool identity_ = true;  // the outputs are every channel in order: no selection
  Kokkos::View<int*, MemorySpace<ExecSpace>> ids_, slots_;
  std::vector<Linear<T, ExecSpace>> hidden_;
  std::vector<matrix> acts_;
  Linear<T, ExecSpace> out_;
  image full_, pred_, dfull_;
  matrix dy_;
};

}  // namespace dchag

#endif
