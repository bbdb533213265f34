#ifndef DCHAG_MODEL_CHANNEL_VIT_HPP
#define DCHAG_MODEL_CHANNEL_VIT_HPP

// The channel vision transformer for forecasting (ClimaX), partitioned over a process grid by
// a policy parameter (parallel/policies.hpp):
//   tokenize (one patch embedding per channel) + channel embedding -> partial aggregation
//   -> [D-CHAG: all-gather group tokens over TP] -> final cross-attention (heads split over TP)
//   -> + position (+ lead-time) embedding -> encoder (Megatron over TP) -> forecast head
//   [D-CHAG: split by output channel, each TP rank predicting the variables of its channels].
// One rank is a grid of 1 x 1 x 1; there is no separate serial path. The model definition
// (ModelConfig) never depends on the grid, so every grid computes the same function from the
// same initial weights.
//
// Model sharding (grid.fsdp() > 1, parallel/sharded_unit.hpp): the embeddings (stem, position,
// lead time), every encoder block, the encoder's norm and the head are units whose parameters
// (of the rank's tensor-parallel share) are cut into fsdp slices. A unit is gathered just before
// it computes and released after: the embeddings after their forward, each block after its
// forward and again after its backward; the norm and the head, whose backward follows their
// forward at once, after their backward. The fsdp ranks train on different samples, like dp.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/model/channel_stem.hpp>
#include <dchag/kernels/channel_select.hpp>
#include <dchag/kernels/dropout.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/model/forecast_head.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/policies.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/parallel/sharded_unit.hpp>

namespace dchag {


template <class T, class ExecSpace, class Policy = DistributedChannels<LinearAggregator>>
class ChannelViT {
 public:
  using scalar = T;
  using execution_space = ExecSpace;
  using policy = Policy;
  using image = View4<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;
  using tensor = View3<T, ExecSpace>;

  explicit ChannelViT(const ModelConfig& config, const ProcessGrid& grid = ProcessGrid::single())
      : config_(validated(config, grid)),
        grid_(grid),
        stem_(config, grid),
        pos_embed_(config.patches(), config.dim, config.grid_h(), config.grid_w()),
        encoder_(config.dim, config.depth, config.heads, config.mlp_ratio, "", 1e-5,
                 grid.tp_comm(), grid.fsdp_comm(),
                 DropoutRates{config.drop_rate, config.drop_path_rate}),
        head_(config.dim, config.channels, config.output_indices(), config.patch,
              config.decoder_depth, head_channels(config, stem_),
              stem_.distributed() ? std::optional<Communicator>(grid.tp_comm()) : std::nullopt) {
    if (config_.lead_time) lead_embed_ = LeadTimeEmbedding<T, ExecSpace>(config.dim);
    if (grid.fsdp() > 1) {
      embed_unit_.emplace("embeddings", grid.fsdp_comm(), embedding_storage(),
                          [this](ParameterList<T, ExecSpace>& l) { embedding_parameters(l); });
      head_unit_.emplace("head", grid.fsdp_comm(), head_storage(),
                         [this](ParameterList<T, ExecSpace>& l) { head_.parameters(l); });
    }
    init();
  }

  // Every parameter's initial value depends only on (seed, its name): see core/parameter.hpp.
  void init() {
    const std::uint64_t s = config_.seed;
    Impl::assign_values(embed_unit_, embedding_storage(), [&] {
      stem_.init(s);
      pos_embed_.init(s);
      if (config_.lead_time) lead_embed_.init(s);
    });
    encoder_.init(s);
    Impl::assign_values(head_unit_, head_storage(), [&] { head_.init(s); });
  }

  // x [B, C, H, W] at time t, lead_times [B] -> prediction [B, K, H, W] of the K output
  // variables predicted_outputs() (all of config().out_variables unless the channels are
  // distributed; the head predicts every channel this rank owns: full_prediction()). mode:
  // evaluation (the default) or a training step, which applies the configuration's dropout and
  // drop-path
  // with masks keyed by (seed, step, site, global sample, token, logical feature), the same on
  // every grid; sample b of this rank is global sample grid().data_rank() * B + b.
  image forward(const ExecSpace& space, const image& x, const View1<T, ExecSpace>& lead_times,
                const ForwardMode& mode = ForwardMode::evaluation()) {
    check_input(x, lead_times);
    batch_ = static_cast<int>(x.extent(0));
    const int L = config_.patches();
    dropout_ = DropoutContext{mode.training, config_.seed, mode.step,
                              std::uint64_t(grid_.data_rank()) * std::uint64_t(batch_)};
    pos_drop_ = dropout_.site("pos_drop", config_.drop_rate);
    {
      Impl::GatheredScope embed(embed_unit_, space, embedding_storage());
      auto agg = stem_.forward(space, x);
      if (x_.extent(0) != agg.extent(0))
        x_ = matrix("encoder_input", agg.extent(0), agg.extent(1));
      Kokkos::deep_copy(space, x_, agg);
      pos_embed_.forward(space, x_);
      if (config_.lead_time) lead_embed_.forward(space, x_, lead_times);
      // ClimaX's pos_drop, after the position and lead-time embeddings.
      if (pos_drop_.active())
        dropout(space, pos_drop_, x_, x_, std::size_t(L), dropout_.sample_begin);
    }
    auto encoded = encoder_.forward(space, x_, batch_, L, dropout_);
    Impl::GatheredScope head(head_unit_, space, head_storage());
    auto y = head_.forward(space, encoded, batch_, config_.height, config_.width);
    head.keep();  // backward() follows and uses the gathered head
    return y;
  }

  // Accumulates every parameter's gradient from dL/dprediction ([B, K, H, W], as forward's).
  void backward(const ExecSpace& space, const image& dpred) {
    Impl::require(batch_ > 0, "ChannelViT: backward() called before forward()");
    Impl::BackwardScope head(head_unit_, space, head_storage());
    auto d = head_.backward(space, dpred);
    head.finish();
    d = encoder_.backward(space, d);
    if (pos_drop_.active())  // the encoder's own gradient buffer, masked in place
      dropout(space, pos_drop_, d, d, std::size_t(config_.patches()), dropout_.sample_begin);
    Impl::BackwardScope embed(embed_unit_, space, embedding_storage());
    if (config_.lead_time) lead_embed_.backward(space, d);
    pos_embed_.backward(space, d);
    stem_.backward(space, d);
    embed.finish();
  }

  // Every parameter this rank holds, under its logical name and shape: whole tensors (or their
  // tensor-parallel pieces), under model sharding this rank's slices of them.
  ParameterList<T, ExecSpace> parameters() const {
    ParameterList<T, ExecSpace> list;
    if (embed_unit_) {
      embed_unit_->parameters(list);
    } else {
      embedding_parameters(list);
    }
    encoder_.parameters(list);
    if (head_unit_) {
      head_unit_->parameters(list);
    } else {
      head_.parameters(list);
    }
    return list;
  }

  // Multiply-add FLOPs x2 of one forward pass on `batch` samples (backward is about twice this).
  double forward_flops(std::size_t batch) const {
    const std::size_t L = config_.patches(), rows = batch * L;
    return stem_.flops(rows) +
           (config_.lead_time ? lead_embed_.flops(batch) : 0.0) + encoder_.flops(batch, L) +
           head_.flops(rows);
  }

  // The last forward's prediction of every input variable this rank owns,
  // [B, channel_count(), H, W].
  image full_prediction() const { return head_.full_prediction(); }

  // The output variables (indices into config().out_variables) whose prediction this rank
  // computes, in the order of forward()'s channels. Under a policy that distributes the
  // channels (D-CHAG) tensor-parallel rank r predicts, and is trained on, the outputs whose
  // channel it owns: a rank never holds another rank's channels of x or of the targets (its
  // targets are these outputs). Otherwise every rank predicts all of them.
  const std::vector<int>& predicted_outputs() const { return head_.predicted_outputs(); }
  bool distributes_outputs() const { return stem_.distributed(); }

  // Collective over the tensor-parallel ranks: every rank's prediction [B, K_r, H, W] joined
  // into the whole [B, C_out, H, W] in output order (for evaluation, maps and tests; training
  // never needs it). The prediction itself when every rank predicts every output.
  image gather_prediction(const ExecSpace& space, const image& pred) const {
    if (!distributes_outputs()) return pred;
    const std::vector<int> outputs = config_.output_indices();
    Impl::require(pred.extent(1) == predicted_outputs().size(), "ChannelViT::gather_prediction: ",
                  "prediction ", Impl::shape_of(pred), " must hold this rank's ",
                  predicted_outputs().size(), " outputs");
    std::vector<std::size_t> counts;
    std::vector<int> position(outputs.size());  // output k's place in the gathered order
    int next = 0;
    for (const auto& r : stem_.channel_ranges()) {
      const auto theirs = Impl::outputs_in_channels(outputs, int(r.begin), int(r.size()));
      counts.push_back(theirs.size());
      for (int k : theirs) position[std::size_t(k)] = next++;
    }
    const std::size_t B = pred.extent(0), H = pred.extent(2), W = pred.extent(3);
    image mine("prediction.channel_major", pred.extent(1), B, H, W);
    image all("prediction.gathered", outputs.size(), B, H, W);
    image joined("prediction.joined", B, outputs.size(), H, W);
    image out("prediction.all_outputs", B, outputs.size(), H, W);
    swap_batch_and_channels(space, pred, mine);
    all_gatherv(space, grid_.tp_comm(), mine, all, counts);
    swap_batch_and_channels(space, all, joined);
    select_channels(space, joined, Impl::device_indices<ExecSpace>("positions", position), out);
    return out;
  }

  const ModelConfig& config() const { return config_; }
  const ProcessGrid& grid() const { return grid_; }
  // The model's name in a checkpoint (train/checkpoint_model.hpp).
  static const char* kind() { return "channel_vit"; }
  // The input channels this rank reads: x passed to forward() is [B, channel_count(), H, W]
  // holding global channels [channel_begin(), channel_begin() + channel_count()).
  int channel_begin() const { return stem_.channel_begin(); }
  int channel_count() const { return stem_.channel_count(); }
  // Every TP rank's input channels, in rank order.
  const std::vector<IndexRange>& channel_ranges() const { return stem_.channel_ranges(); }

 private:
  // The channels the head predicts: this rank's own when they are distributed.
  static SplitRange head_channels(const ModelConfig& c, const ChannelStem<T, ExecSpace, Policy>& stem) {
    if (!stem.distributed()) return SplitRange::whole(c.channels);
    return {stem.channel_begin(), stem.channel_count(), c.channels};
  }

  // Validates the definition and checks, on every rank at once, that all ranks were given the
  // same one: a rank that disagreed would otherwise hang in the first collective.
  static const ModelConfig& validated(const ModelConfig& c, const ProcessGrid& grid) {
    c.validate();
    check_agreement(grid.world(), "ChannelViT configuration",
                    c.describe() + " seed=" + std::to_string(c.seed) + " policy=" +
                        Policy::name() + " grid=" + grid.describe());
    return c;
  }

  // The stem checks the image; the lead times are checked here.
  void check_input(const image& x, const View1<T, ExecSpace>& lead) const {
    Impl::require(!config_.lead_time || lead.extent(0) == x.extent(0), "ChannelViT: lead times ",
                  Impl::shape_of(lead), " must have one entry per sample (", x.extent(0), ")");
  }

  void embedding_parameters(ParameterList<T, ExecSpace>& list) const {
    stem_.parameters(list);
    pos_embed_.parameters(list);
    if (config_.lead_time) lead_embed_.parameters(list);
  }
  auto embedding_storage() {
    return [this](auto& f) {
      stem_.visit_storage(f);
      pos_embed_.visit_storage(f);
      if (config_.lead_time) lead_embed_.visit_storage(f);
    };
  }
  auto head_storage() {
    return [this](auto& f) { head_.visit_storage(f); };
  }

  ModelConfig config_;
  ProcessGrid grid_;
  ChannelStem<T, ExecSpace, Policy> stem_;
  PositionEmbedding<T, ExecSpace> pos_embed_;
  LeadTimeEmbedding<T, ExecSpace> lead_embed_;
  Encoder<T, ExecSpace> encoder_;
  ForecastHead<T, ExecSpace> head_;
  std::optional<ShardedUnit<T, ExecSpace>> embed_unit_, head_unit_;  // only when sharded
  matrix x_;
  int batch_ = 0;
  DropoutContext dropout_;  // of the last forward, for the backward
  DropoutSite pos_drop_;
};

}  // namespace dchag

#endif
