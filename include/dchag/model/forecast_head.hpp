#ifndef DCHAG_MODEL_FORECAST_HEAD_HPP
#define DCHAG_MODEL_FORECAST_HEAD_HPP

// ClimaX's prediction head: decoder_depth x [Linear(D, D), GELU], Linear(D, C*p*p) predicting
// every input variable, unpatchify to [B, C, H, W], then the output variables' channels
// (`preds[:, out_var_ids]` in ClimaX) as the prediction [B, C_out, H, W]. Named as ClimaX's
// nn.Sequential: head.0, head.2, ... are the Linears (the GELUs at odd indices have no
// parameters), the last Linear is head.{2*depth}. The gradient of the variables not predicted
// is zero: they shape the weights only as far as ClimaX's own head does.
//
// Channel-parallel (D-CHAG all the way to the output): a head given a part [c0, c0 + n) of the
// C channels holds only the rows of the last Linear that predict them (column-parallel in p*p
// sections of C rows, the ClimaX feature order (i*p + j)*C + c), so its prediction is
// [B, K, H, W] for the K output variables whose channel it owns (predicted_outputs()), in the
// order of the outputs. The hidden layers are replicated; the gradient reaching them from the
// last Linear is this rank's share of a sum over the tensor-parallel ranks, all-reduced before
// they use it (one [B*L, D] all-reduce per step, against B*L*C*p^2 prediction values per rank
// that the replicated head would hold). With the whole range it is ClimaX's head and never
// communicates.

#include <optional>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/channel_select.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/parallel_linear.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {
namespace Impl {

// The outputs (indices into `outputs`, the channel of each output variable) whose channel lies
// in [begin, begin + count), in output order.
inline std::vector<int> outputs_in_channels(const std::vector<int>& outputs, int begin,
                                            int count) {
  std::vector<int> mine;
  for (std::size_t k = 0; k < outputs.size(); ++k)
    if (outputs[k] >= begin && outputs[k] < begin + count) mine.push_back(static_cast<int>(k));
  return mine;
}

template <class ExecSpace>
Kokkos::View<int*, MemorySpace<ExecSpace>> device_indices(const char* label,
                                                          const std::vector<int>& host) {
  Kokkos::View<int*, MemorySpace<ExecSpace>> v(std::string(label), host.size());
  Kokkos::deep_copy(v, Kokkos::View<const int*, Kokkos::HostSpace,
                                    Kokkos::MemoryTraits<Kokkos::Unmanaged>>(host.data(),
                                                                             host.size()));
  return v;
}

}  // namespace Impl

template <class T, class ExecSpace>
class ForecastHead {
 public:
  using matrix = View2<T, ExecSpace>;
  using image = View4<T, ExecSpace>;

  ForecastHead() = default;
  // channels: the variables the last Linear predicts; outputs: the channel of each output
  // variable, distinct, in the order of the prediction; owned: the channels this head predicts
  // (the whole [0, channels) but for a channel-parallel head, which then all-reduces over tp).
  ForecastHead(int dim, int channels, const std::vector<int>& outputs, int patch,
               int decoder_depth, SplitRange owned = {},
               std::optional<Communicator> tp = std::nullopt)
      : channels_(channels),
        owned_(owned.total == 0 ? SplitRange::whole(channels) : owned),
        patch_(patch),
        tp_(std::move(tp)) {
    const int out_channels = static_cast<int>(outputs.size());
    Impl::require(channels > 0 && out_channels > 0 && patch > 0 && decoder_depth >= 0,
                  "ForecastHead: channels (", channels, "), outputs (", out_channels,
                  ") and patch (", patch, ") must be positive and decoder_depth (", decoder_depth,
                  ") non-negative");
    Impl::require(owned_.total == channels, "ForecastHead: the owned channels are a part of ",
                  owned_.total, " channels, expected ", channels);
    Impl::require(owned_.is_whole() || tp_, "ForecastHead: a head owning channels [",
                  owned_.begin, ", ", owned_.begin + owned_.count, ") of ", channels,
                  " needs the tensor-parallel communicator its ranks share");
    std::vector<bool> taken(channels, false);
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const int c = outputs[k];
      Impl::require(c >= 0 && c < channels && !taken[c], "ForecastHead: output ", k,
                    " is channel ", c, ", expected a channel in [0, ", channels,
                    ") not already an output");
      taken[c] = true;
    }
    // Local channel of each predicted output, and the prediction slot of each local channel.
    predicted_ = Impl::outputs_in_channels(outputs, owned_.begin, owned_.count);
    std::vector<int> ids, slot(owned_.count, -1);
    for (std::size_t k = 0; k < predicted_.size(); ++k) {
      ids.push_back(outputs[predicted_[k]] - owned_.begin);
      slot[ids.back()] = static_cast<int>(k);
      identity_ = identity_ && ids.back() == static_cast<int>(k);
    }
    identity_ = identity_ && static_cast<int>(ids.size()) == owned_.count;
    if (!identity_) {
      ids_ = Impl::device_indices<ExecSpace>("head.output_ids", ids);
      slots_ = Impl::device_indices<ExecSpace>("head.output_slots", slot);
    }
    for (int i = 0; i < decoder_depth; ++i)
      hidden_.emplace_back("head." + std::to_string(2 * i), dim, dim);
    acts_.resize(decoder_depth);
    out_ = ColumnParallelLinear<T, ExecSpace>("head." + std::to_string(2 * decoder_depth), dim,
                                              Impl::checked_split(owned_, "ForecastHead",
                                                                  "channels"),
                                              patch * patch);
  }

  void init(std::uint64_t seed) {
    for (auto& l : hidden_) l.init(seed);
    out_.init_truncated_normal(seed, 0.02);  // as Linear::init: timm / ClimaX
  }

  // tokens [B*L, D] -> prediction [B, K, H, W] of the predicted outputs (the prediction of
  // every owned channel: full_prediction())
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
      full_ = image("prediction.all_variables", batch, owned_.count, height, width);
      pred_ = identity_ ? full_ : image("prediction", batch, predicted_.size(), height, width);
    }
    unpatchify(space, y, patch_, full_);
    if (!identity_) select_channels(space, full_, ids_, pred_);
    return pred_;
  }

  // The last forward's prediction of every owned channel, [B, owned count, H, W].
  image full_prediction() const { return full_; }

  // dL/dprediction -> dL/dtokens (whole on every rank)
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
    if (!owned_.is_whole()) all_reduce_sum(space, *tp_, d);
    for (std::size_t i = hidden_.size(); i-- > 0;) {
      // gelu_backward reads the pre-activation the Linear returned in forward.
      gelu_backward(space, hidden_pre(i), d, d);
      d = hidden_[i].backward(space, d);
    }
    return d;
  }

  // The outputs (indices into the model's out_variables) whose prediction this head computes,
  // in the order of the prediction's channels.
  const std::vector<int>& predicted_outputs() const { return predicted_; }

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

  int channels_ = 0;
  SplitRange owned_;
  int patch_ = 0;
  std::optional<Communicator> tp_;  // only for a channel-parallel head
  std::vector<int> predicted_;
  bool identity_ = true;  // the predicted outputs are every owned channel in order
  Kokkos::View<int*, MemorySpace<ExecSpace>> ids_, slots_;
  std::vector<Linear<T, ExecSpace>> hidden_;
  std::vector<matrix> acts_;
  ColumnParallelLinear<T, ExecSpace> out_;
  image full_, pred_, dfull_;
  matrix dy_;
};

}  // namespace dchag

#endif
