#ifndef DCHAG_MODEL_MAE_HPP
#define DCHAG_MODEL_MAE_HPP

// The channel masked autoencoder for self-supervised pre-training on many-channel images
// (hyperspectral cubes), MAE (He et al. 2021) on top of the ClimaX / D-CHAG front:
//   ChannelStem (tokenize every channel, aggregate; partitioned by the policy) -> + pos_embed
//   -> keep a random Lk = round(L (1 - mask_ratio)) of the L patch tokens of every sample
//   -> encoder on the kept tokens only [B*Lk, D] (Megatron over TP, as ChannelViT's)
//   -> decoder_embed Linear(D -> Dd) -> un-shuffle to all L positions, mask_token at the masked
//   ones -> + decoder_pos_embed -> decoder "decoder_blocks.{i}" / "decoder_norm" (TP-split too)
//   -> decoder_pred Linear(Dd -> p*p*C): every channel's pixels of every patch.
// The loss (train/losses.hpp masked_mse) compares the prediction with the patchified image of
// all C channels, over the masked patches only.
//
// API. forward(space, x_local, mask_step) takes this rank's channels x_local[B, channel_count(),
// H, W] (all C unless the policy distributes channels over TP ranks) and returns the prediction
// [B, L, p*p*C_local] of those same channels, in the patch order of kernels/patchify.hpp: under
// D-CHAG decoder_pred is split by channel as ForecastHead's last Linear is (column-parallel in
// p*p sections), so a rank predicts, and is trained on, only its own channels, and its input is
// its own target. The caller builds the target [B, L, p*p*C_local] from x_local with
// mae_target() and computes the masked MSE normalised by the whole patch (patch_values_total()),
// summed over the TP ranks when distributes_outputs(); backward(space, dpred) accumulates every
// gradient. MaeTrainer (train/mae_trainer.hpp) does all of this.
//
// Masks. The mask of a sample is a pure function of (config.seed, mask_step, the sample's index
// in the global batch): see kernels/masking.hpp. Every TP rank therefore draws the same mask
// without communicating, data-parallel ranks (each holding an equal, rank-ordered share of the
// global batch) draw the masks the single-rank run would, a run is reproducible, and holding
// mask_step fixed holds the mask fixed (gradient checks). Trainers pass their step counter.
//
// ModelConfig's forecast-only fields (out_variables, decoder_depth, lead_time) are not used.

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/masking.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/layers/parallel_linear.hpp>
#include <dchag/model/channel_stem.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/policies.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/parallel/sharded_unit.hpp>

namespace dchag {

// The masked-autoencoder part of the model definition (MAE's defaults for the decoder).
struct MaeConfig {
  double mask_ratio = 0.75;  // fraction of the patches removed before the encoder
  int decoder_dim = 128;     // Dd
  int decoder_depth = 2;
  int decoder_heads = 4;
  // Decoder MLP hidden width int(decoder_dim * decoder_mlp_ratio), as ModelConfig::mlp_ratio.
  double decoder_mlp_ratio = 4.0;
  // MAE's initialisation (initialize_weights): every weight matrix xavier-uniform over its
  // logical shape [fan_out, fan_in...] (nn.Linear, the attention projections and the
  // per-channel patch embeddings viewed as [D, p*p]). It learns markedly faster than the layers'
  // own ClimaX trunc_normal(0.02), which false keeps (then the encoder starts as ChannelViT's).
  bool xavier_init = true;

  // Patches the encoder sees per sample, of L.
  int kept(int L) const {
    return static_cast<int>(std::lround(static_cast<double>(L) * (1.0 - mask_ratio)));
  }

  // Refuses nonsense before anything is allocated; model must be valid.
  void validate(const ModelConfig& model) const {
    const int L = model.patches();
    Impl::require(std::isfinite(mask_ratio) && mask_ratio > 0.0 && mask_ratio < 1.0,
                  "MaeConfig: mask_ratio must lie in (0, 1), got ", mask_ratio);
    Impl::require(decoder_dim > 0 && decoder_depth >= 0 && decoder_heads > 0,
                  "MaeConfig: decoder_dim (", decoder_dim, ") and decoder_heads (", decoder_heads,
                  ") must be positive and decoder_depth (", decoder_depth, ") non-negative");
    Impl::require(std::isfinite(decoder_mlp_ratio) && decoder_mlp_ratio > 0 &&
                      decoder_mlp_ratio <= ModelConfig::max_mlp_ratio,
                  "MaeConfig: decoder_mlp_ratio must be a number in (0, ",
                  ModelConfig::max_mlp_ratio, "], got ", decoder_mlp_ratio);
    Impl::require(static_cast<long long>(decoder_dim * decoder_mlp_ratio) >= 1,
                  "MaeConfig: the decoder MLP hidden width int(", decoder_dim, " * ",
                  decoder_mlp_ratio, ") must be at least 1");
    Impl::require(decoder_dim % decoder_heads == 0, "MaeConfig: decoder_dim ", decoder_dim,
                  " is not divisible by decoder_heads ", decoder_heads);
    Impl::require(decoder_dim % 4 == 0, "MaeConfig: decoder_dim ", decoder_dim,
                  " must be divisible by 4 (2-D sin-cos decoder position embedding)");
    // The masked autoencoder has no dropout path (MAE pre-training does without): refuse the
    // rates rather than ignore them.
    Impl::require(model.drop_rate == 0 && model.drop_path_rate == 0,
                  "MaeConfig: the masked autoencoder trains without dropout; got drop_rate = ",
                  model.drop_rate, ", drop_path_rate = ", model.drop_path_rate, " (expected 0)");
    const int k = kept(L);
    Impl::require(k >= 1 && k < L, "MaeConfig: mask_ratio ", mask_ratio, " keeps ", k, " of the ",
                  L, " patches (", model.grid_h(), " x ", model.grid_w(),
                  "); at least one patch must be kept and one masked");
  }

  std::string describe() const {
    std::ostringstream s;
    s << "mask_ratio=" << Impl::exact_text(mask_ratio) << " decoder_dim=" << decoder_dim
      << " decoder_depth=" << decoder_depth << " decoder_heads=" << decoder_heads
      << " decoder_mlp_ratio=" << Impl::round_trip_text(decoder_mlp_ratio)
      << " init=" << (xavier_init ? "xavier" : "climax");
    return s.str();
  }
};

// The reconstruction target: the image x[B, C_x, H, W] (the channels a rank predicts: its
// input) as target[B, L, p*p*C_x], the order decoder_pred predicts in (kernels/patchify.hpp).
template <class ExecSpace, class ImageView, class TargetView>
void mae_target(const ExecSpace& space, const ImageView& x, int patch,
                const TargetView& target) {
  static_assert(TargetView::rank == 3, "dchag::mae_target: the target is [B, L, p*p*C]");
  static_assert(std::is_same<typename TargetView::array_layout, Kokkos::LayoutRight>::value,
                "dchag::mae_target: the target must be LayoutRight (viewed as [B*L, p*p*C])");
  Impl::require(target.extent(0) == x.extent(0), "dchag::mae_target: target ",
                Impl::shape_of(target), " must hold the ", x.extent(0), " samples of ",
                Impl::shape_of(x));
  patchify(space, x, patch,
           Impl::as_matrix(target, target.extent(0) * target.extent(1), target.extent(2)));
}

namespace Impl {

// PyTorch's xavier_uniform_ of a parameter over its logical shape: U(-a, a) with
// a = sqrt(6 / (fan_in + fan_out)), fan_out = shape[0], fan_in = the product of the rest. Each
// logical element's value depends only on (seed, name, logical index), and exactly the pieces
// this rank holds are written, so every partition starts from the single-rank values.
template <class T, class ExecSpace>
void xavier_uniform(const Parameter<T, ExecSpace>& p, std::uint64_t seed) {
  require(p.shape.size() >= 2, "xavier_uniform: parameter '", p.name,
          "' has rank ", p.shape.size(), "; fans need at least two dimensions");
  std::size_t fan_in = 1;
  for (std::size_t d = 1; d < p.shape.size(); ++d) fan_in *= p.shape[d];
  const double bound = std::sqrt(6.0 / double(fan_in + p.shape[0]));
  const auto value = uniform_value(seed, stream_id(p.name), -bound, bound);
  Kokkos::fence();  // a kernel may still be using the parameter
  auto host = Kokkos::create_mirror_view(p.value);
  if (p.pieces.empty()) {
    for (std::size_t i = 0; i < host.extent(0); ++i) host(i) = static_cast<T>(value(i));
  } else {
    // Pieces are stored one after the other, each row-major over its box.
    const std::size_t rank = p.shape.size();
    std::size_t at = 0;
    for (const auto& box : p.pieces) {
      std::vector<std::size_t> idx(rank, 0);
      for (std::size_t n = 0; n < box.size(); ++n, ++at) {
        std::uint64_t logical = 0;
        for (std::size_t d = 0; d < rank; ++d) logical = logical * p.shape[d] + box.start[d] + idx[d];
        host(at) = static_cast<T>(value(logical));
        for (std::size_t d = rank; d-- > 0;) {
          if (++idx[d] < box.extents[d]) break;
          idx[d] = 0;
        }
      }
    }
    require(at == host.extent(0), "xavier_uniform: the pieces of '", p.name, "' hold ", at,
            " values, the local tensor ", host.extent(0));
  }
  Kokkos::deep_copy(p.value, host);
}

}  // namespace Impl

template <class T, class ExecSpace, class Policy = DistributedChannels<LinearAggregator>>
class ChannelMAE {
 public:
  using scalar = T;
  using execution_space = ExecSpace;
  using policy = Policy;
  using image = View4<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;
  using vector = View1<T, ExecSpace>;
  using index_map = View2<int, ExecSpace>;
  // [B, L, p*p*C], a view of the decoder_pred output (valid until the next forward()).
  using prediction = Unmanaged<T***, ExecSpace>;

  ChannelMAE(const ModelConfig& config, const MaeConfig& mae,
             const ProcessGrid& grid = ProcessGrid::single())
      : config_(validated(config, mae, grid)),
        mae_(mae),
        grid_(grid),
        L_(config.patches()),
        kept_(mae.kept(config.patches())),
        stem_(config, grid),
        pos_embed_(L_, config.dim, config.grid_h(), config.grid_w()),
        encoder_(config.dim, config.depth, config.heads, config.mlp_ratio, "", 1e-5,
                 grid.tp_comm(), grid.fsdp_comm()),
        decoder_embed_("decoder_embed", config.dim, mae.decoder_dim),
        mask_token_("mask_token", mae.decoder_dim),
        grad_mask_token_("mask_token.grad", mae.decoder_dim),
        decoder_pos_embed_(L_, mae.decoder_dim, config.grid_h(), config.grid_w(),
                           "decoder_pos_embed"),
        decoder_(mae.decoder_dim, mae.decoder_depth, mae.decoder_heads,
                 mae.decoder_mlp_ratio, "decoder_", 1e-5, grid.tp_comm(),
                 grid.fsdp_comm()),
        decoder_pred_("decoder_pred", mae.decoder_dim,
                      stem_.distributed() ? SplitRange{stem_.channel_begin(), stem_.channel_count(),
                                                       config.channels}
                                          : SplitRange::whole(config.channels),
                      config.patch * config.patch) {
    // Model sharding: the encoder and decoder shard their blocks; the rest is three units, in
    // the order they compute (see channel_vit.hpp).
    if (grid.fsdp() > 1) {
      embed_unit_.emplace("embeddings", grid.fsdp_comm(), embedding_storage(),
                          [this](ParameterList<T, ExecSpace>& l) { embedding_parameters(l); });
      bridge_unit_.emplace("decoder_embeddings", grid.fsdp_comm(), bridge_storage(),
                           [this](ParameterList<T, ExecSpace>& l) { bridge_parameters(l); });
      head_unit_.emplace("decoder_pred", grid.fsdp_comm(), head_storage(),
                         [this](ParameterList<T, ExecSpace>& l) { decoder_pred_.parameters(l); });
    }
    init();
  }

  // Every parameter's initial value depends only on (seed, its name): see core/parameter.hpp.
  // mask_token ~ trunc_normal(0.02) as MAE; both position embeddings start as 2-D sin-cos and
  // are learnable (MAE freezes its decoder's; learning it costs nothing and ClimaX learns its);
  // weight matrices as MaeConfig::xavier_init says, biases and norms as the layers set them.
  void init() {
    const std::uint64_t s = config_.seed;
    Impl::assign_values(embed_unit_, embedding_storage(), [&] {
      stem_.init(s);
      pos_embed_.init(s);
    });
    encoder_.init(s);
    Impl::assign_values(bridge_unit_, bridge_storage(), [&] {
      decoder_embed_.init(s);
      truncated_normal(mask_token_, s, stream_id("mask_token"), 0.02);
      decoder_pos_embed_.init(s);
    });
    decoder_.init(s);
    Impl::assign_values(head_unit_, head_storage(),
                        [&] { decoder_pred_.init_truncated_normal(s, 0.02); });
    if (!mae_.xavier_init) return;
    // Whole tensors, TP pieces or fsdp slices alike: each writes what this rank holds.
    for (const auto& p : parameters())
      if (p.decay && p.shape.size() >= 2) Impl::xavier_uniform(p, s);
  }

  // x[B, channel_count(), H, W] -> prediction [B, L, patch_values()] of those channels; the
  // mask used is then mask().
  prediction forward(const ExecSpace& space, const image& x, std::uint64_t mask_step) {
    const int B = static_cast<int>(x.extent(0));
    {
      Impl::GatheredScope embed(embed_unit_, space, embedding_storage());
      auto agg = stem_.forward(space, x);  // checks x
      allocate(B);
      make_mask(space, mask_step);
      Kokkos::deep_copy(space, x_, agg);
      pos_embed_.forward(space, x_);
    }
    gather_tokens(space, x_, ids_keep_, slot_, kept_tokens_);
    auto encoded = encoder_.forward(space, kept_tokens_, B, kept_);
    {
      Impl::GatheredScope bridge(bridge_unit_, space, bridge_storage());
      auto embedded = decoder_embed_.forward(space, encoded);
      scatter_tokens(space, embedded, ids_keep_, slot_, mask_token_, z_);
      decoder_pos_embed_.forward(space, z_);
    }
    auto decoded = decoder_.forward(space, z_, B, L_);
    Impl::GatheredScope head(head_unit_, space, head_storage());
    auto y = decoder_pred_.forward(space, decoded);
    head.keep();  // backward() follows and uses the gathered decoder_pred
    return prediction(y.data(), std::size_t(B), std::size_t(L_), y.extent(1));
  }

  // Accumulates every parameter's gradient from dL/dprediction [B, L, patch_values()] (this
  // rank's channels' share when the outputs are distributed).
  void backward(const ExecSpace& space, const Unmanaged<const T***, ExecSpace>& dpred) {
    Impl::require(batch_ > 0, "ChannelMAE: backward() called before forward()");
    Impl::require(dpred.extent(0) == std::size_t(batch_) && dpred.extent(1) == std::size_t(L_) &&
                      dpred.extent(2) == std::size_t(patch_values()),
                  "ChannelMAE: prediction gradient ", Impl::shape_of(dpred), " must be [",
                  batch_, ", ", L_, ", ", patch_values(), "] as the last forward's prediction");
    const ConstMatrix<T, ExecSpace> dy(dpred.data(), std::size_t(batch_) * L_, dpred.extent(2));
    Impl::BackwardScope head(head_unit_, space, head_storage());
    auto d = decoder_pred_.backward(space, dy);
    head.finish();
    // A channel-parallel decoder_pred's input gradient is this rank's share of a sum over TP.
    if (distributes_outputs()) all_reduce_sum(space, grid_.tp_comm(), d);
    d = decoder_.backward(space, d);
    Impl::BackwardScope bridge(bridge_unit_, space, bridge_storage());
    decoder_pos_embed_.backward(space, d);
    sum_masked_rows(space, d, slot_, grad_mask_token_);
    gather_tokens(space, d, ids_keep_, slot_, dembedded_);
    d = decoder_embed_.backward(space, dembedded_);
    bridge.finish();
    d = encoder_.backward(space, d);
    scatter_tokens(space, d, ids_keep_, slot_, dx_);
    Impl::BackwardScope embed(embed_unit_, space, embedding_storage());
    pos_embed_.backward(space, dx_);
    stem_.backward(space, dx_);
    embed.finish();
  }

  // Every parameter this rank holds, under its logical name and shape: the stem's (ClimaX
  // names), pos_embed, blocks.*, norm.*, then MAE's decoder_embed.*, mask_token [1, 1, Dd],
  // decoder_pos_embed [1, L, Dd], decoder_blocks.*, decoder_norm.*, decoder_pred.*.
  // Under model sharding (grid.fsdp() > 1) this rank's slices of them.
  ParameterList<T, ExecSpace> parameters() const {
    ParameterList<T, ExecSpace> list;
    if (embed_unit_) {
      embed_unit_->parameters(list);
      encoder_.parameters(list);
      bridge_unit_->parameters(list);
      decoder_.parameters(list);
      head_unit_->parameters(list);
      return list;
    }
    embedding_parameters(list);
    encoder_.parameters(list);
    bridge_parameters(list);
    decoder_.parameters(list);
    decoder_pred_.parameters(list);
    return list;
  }

  // Multiply-add FLOPs x2 of one forward pass on `batch` samples done by this rank (backward
  // is about twice this): the stem over all L patches, the encoder over the Lk kept ones, the
  // decoder over all L.
  double forward_flops(std::size_t batch) const {
    const std::size_t rows = batch * L_, kept_rows = batch * kept_;
    return stem_.flops(rows) + encoder_.flops(batch, kept_) + decoder_embed_.flops(kept_rows) +
           decoder_.flops(batch, L_) + decoder_pred_.flops(rows);
  }

  const ModelConfig& config() const { return config_; }
  const MaeConfig& mae_config() const { return mae_; }
  const ProcessGrid& grid() const { return grid_; }
  // The model's name in a checkpoint (train/checkpoint_model.hpp).
  static const char* kind() { return "channel_mae"; }
  // The input channels this rank reads: x passed to forward() is [B, channel_count(), H, W]
  // holding global channels [channel_begin(), channel_begin() + channel_count()).
  int channel_begin() const { return stem_.channel_begin(); }
  int channel_count() const { return stem_.channel_count(); }
  int patches() const { return L_; }
  int kept_patches() const { return kept_; }
  // p*p*channel_count(): the values this rank predicts per patch (its channels' pixels).
  int patch_values() const { return config_.patch * config_.patch * channel_count(); }
  // p*p*C: the values of a whole patch, over which the loss is averaged.
  int patch_values_total() const { return config_.patch * config_.patch * config_.channels; }
  // Whether each TP rank predicts only its own channels (the policy distributes them).
  bool distributes_outputs() const { return stem_.distributed(); }

  // The last forward's mask [B, L]: 1 where the patch was removed (the loss is computed
  // there), 0 where the encoder saw it; the layout masked_mse takes.
  const matrix& mask() const { return mask_; }
  // The last forward's kept positions [B, Lk], ascending per sample.
  const index_map& kept_ids() const { return ids_keep_; }
  std::uint64_t mask_step() const { return mask_step_; }

 private:
  // Every rank first checks that all ranks were given the same definition (a rank that
  // disagreed would hang in a later collective), then validates it: a nonsense definition then
  // fails alike on every rank, before anything is allocated.
  static const ModelConfig& validated(const ModelConfig& c, const MaeConfig& mae,
                                      const ProcessGrid& grid) {
    check_agreement(grid.world(), "ChannelMAE configuration",
                    c.describe() + " seed=" + std::to_string(c.seed) + " " + mae.describe() +
                        " policy=" + Policy::name() + " grid=" + grid.describe());
    c.validate();
    mae.validate(c);
    return c;
  }

  int mask_dim() const { return static_cast<int>(mask_token_.extent(0)); }

  void allocate(int B) {
    if (batch_ == B) return;
    batch_ = B;
    const std::size_t rows = std::size_t(B) * L_, kept_rows = std::size_t(B) * kept_;
    const std::size_t D = std::size_t(config_.dim), Dd = std::size_t(mask_dim());
    x_ = matrix("mae.encoder_input", rows, D);
    kept_tokens_ = matrix("mae.kept_tokens", kept_rows, D);
    z_ = matrix("mae.decoder_input", rows, Dd);
    dembedded_ = matrix("mae.ddecoder_embed", kept_rows, Dd);
    dx_ = matrix("mae.dencoder_input", rows, D);
    ids_keep_ = index_map("mae.ids_keep", B, kept_);
    slot_ = index_map("mae.slot", B, L_);
    mask_ = matrix("mae.mask", B, L_);
    ids_keep_host_ = Kokkos::create_mirror_view(ids_keep_);
    slot_host_ = Kokkos::create_mirror_view(slot_);
    mask_host_ = Kokkos::create_mirror_view(mask_);
    mask_valid_ = false;
  }

  // Draws this forward's masks on the host (B*L keys, negligible next to the model) and copies
  // them over; kept when the step and batch are those of the previous forward.
  void make_mask(const ExecSpace& space, std::uint64_t mask_step) {
    if (mask_valid_ && mask_step == mask_step_) return;
    const std::uint64_t first = std::uint64_t(grid_.data_rank()) * std::uint64_t(batch_);
    for (int b = 0; b < batch_; ++b) {
      const auto keep = random_kept_positions(config_.seed, mask_step, first + b, L_, kept_);
      for (int l = 0; l < L_; ++l) {
        slot_host_(b, l) = -1;
        mask_host_(b, l) = T(1);
      }
      for (int k = 0; k < kept_; ++k) {
        ids_keep_host_(b, k) = keep[k];
        slot_host_(b, keep[k]) = k;
        mask_host_(b, keep[k]) = T(0);
      }
    }
    Kokkos::deep_copy(space, ids_keep_, ids_keep_host_);
    Kokkos::deep_copy(space, slot_, slot_host_);
    Kokkos::deep_copy(space, mask_, mask_host_);
    // The host mirrors are rewritten by the next draw: the copies must be done by then.
    space.fence();
    mask_step_ = mask_step;
    mask_valid_ = true;
  }

  void embedding_parameters(ParameterList<T, ExecSpace>& list) const {
    stem_.parameters(list);
    pos_embed_.parameters(list);
  }
  // decoder_embed, mask_token, decoder_pos_embed: between the encoder and the decoder.
  void bridge_parameters(ParameterList<T, ExecSpace>& list) const {
    decoder_embed_.parameters(list);
    // An embedding, not a weight matrix: no weight decay (the library's rule, see Parameter).
    Impl::add_parameter<T, ExecSpace>(
        list, "mask_token", Unmanaged<T***, ExecSpace>(mask_token_.data(), 1, 1, mask_dim()),
        Unmanaged<T***, ExecSpace>(grad_mask_token_.data(), 1, 1, mask_dim()), false);
    decoder_pos_embed_.parameters(list);
  }
  auto embedding_storage() {
    return [this](auto& f) {
      stem_.visit_storage(f);
      pos_embed_.visit_storage(f);
    };
  }
  auto bridge_storage() {
    return [this](auto& f) {
      decoder_embed_.visit_storage(f);
      f(mask_token_, grad_mask_token_);
      decoder_pos_embed_.visit_storage(f);
    };
  }
  auto head_storage() {
    return [this](auto& f) { decoder_pred_.visit_storage(f); };
  }

  ModelConfig config_;
  MaeConfig mae_;
  ProcessGrid grid_;
  int L_ = 0, kept_ = 0;
  ChannelStem<T, ExecSpace, Policy> stem_;
  PositionEmbedding<T, ExecSpace> pos_embed_;
  Encoder<T, ExecSpace> encoder_;
  Linear<T, ExecSpace> decoder_embed_;
  vector mask_token_, grad_mask_token_;
  PositionEmbedding<T, ExecSpace> decoder_pos_embed_;
  Encoder<T, ExecSpace> decoder_;
  ColumnParallelLinear<T, ExecSpace> decoder_pred_;
  std::optional<ShardedUnit<T, ExecSpace>> embed_unit_, bridge_unit_, head_unit_;  // sharded only

  int batch_ = 0;
  matrix x_, kept_tokens_, z_, dembedded_, dx_;
  index_map ids_keep_, slot_;
  matrix mask_;
  typename index_map::HostMirror ids_keep_host_, slot_host_;
  typename matrix::HostMirror mask_host_;
  std::uint64_t mask_step_ = 0;
  bool mask_valid_ = false;
};

}  // namespace dchag

#endif
