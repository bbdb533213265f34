#ifndef DCHAG_MODEL_ENCODER_HPP
#define DCHAG_MODEL_ENCODER_HPP

// The transformer trunk of ClimaX: `depth` pre-LayerNorm ViT blocks "blocks.{i}" and a final
// LayerNorm "norm". The embeddings in front of it belong to the model, not to the encoder.
// Under tensor parallelism every block is split over the same group `tp` (see vit_block.hpp);
// the final norm is replicated. Under model sharding (an fsdp group of more than one rank) every
// block, and the final norm, is a ShardedUnit: its parameters are gathered just before its
// forward and again before its backward, and released after each; its gradients are
// reduce-scattered at the end of its backward. With dchag::set_fsdp_overlap(true) the gather of
// the next unit is in flight while a block computes (forward: block i + 1, or the norm after
// the last block; backward: the block below), and a unit's gradient reduce-scatter is in flight
// while the next unit computes its backward; the order of the collectives on the fsdp group is
// the same as without overlap, only their completion moves later.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/layer_norm.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/model/vit_block.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/parallel/sharded_unit.hpp>

namespace dchag {

template <class T, class ExecSpace>
class Encoder {
 public:
  using matrix = View2<T, ExecSpace>;

  // Default-constructed: an empty encoder to assign to (holds no communicator).
  Encoder() = default;
  // prefix goes in front of every parameter name: "" gives ClimaX's "blocks.{i}" and "norm",
  // "decoder_" the MAE decoder's "decoder_blocks.{i}" and "decoder_norm".
  // tp: the tensor-parallel group every block is split over; collective over it when it has
  // more than one rank. heads and int(dim * mlp_ratio) must divide by its size.
  // fsdp: the group the parameters are sharded over (each rank then trains on its own samples);
  // collective over it when it has more than one rank.
  // rates: dropout of every block and drop-path of the last one in training; block i gets
  // drop-path rates.path * i / (depth - 1), ClimaX's linear schedule (none by default).
  Encoder(int dim, int depth, int heads, double mlp_ratio = 4.0, std::string prefix = "",
          double eps = 1e-5, Communicator tp = Communicator(MPI_COMM_SELF),
          Communicator fsdp = Communicator(MPI_COMM_SELF), DropoutRates rates = {})
      : prefix_(std::move(prefix)), tp_(std::move(tp)) {
    // The depth decides how many blocks, hence how many collectives, follow: agree on it (and
    // on the rest) before anything can throw on some ranks only.
    const std::string config =
        Impl::concat("dim = ", dim, ", depth = ", depth, ", heads = ", heads, ", mlp_ratio = ",
                     Impl::exact_text(mlp_ratio), ", eps = ", Impl::exact_text(eps),
                     ", drop_rate = ", Impl::exact_text(rates.drop), ", drop_path_rate = ",
                     Impl::exact_text(rates.path));
    const std::string what = "the configuration of Encoder '" + prefix_ + "blocks'";
    if (tp_->size() > 1) check_agreement(*tp_, what, config);
    if (fsdp.size() > 1) check_agreement(fsdp, what, config);
    Impl::require(depth >= 0, "Encoder '", prefix_, "blocks': depth must not be negative, got ",
                  depth);
    const bool sharded = fsdp.size() > 1;
    blocks_.reserve(depth);
    for (int i = 0; i < depth; ++i) {
      const DropoutRates block_rates{rates.drop,
                                     Impl::block_drop_path_rate(rates.path, depth, i)};
      blocks_.emplace_back(prefix_ + "blocks." + std::to_string(i), dim, heads, mlp_ratio, eps,
                           *tp_, block_rates);
      // Sharded at once, so that no more than one block is ever whole on a rank.
      if (sharded)
        units_.emplace_back(blocks_[i].name(), fsdp, block_storage(i),
                            [&](ParameterList<T, ExecSpace>& l) { blocks_[i].parameters(l); });
    }
    norm_ = LayerNorm<T, ExecSpace>(prefix_ + "norm", dim, eps);
    if (sharded)
      units_.emplace_back(prefix_ + "norm", fsdp, norm_storage(),
                          [&](ParameterList<T, ExecSpace>& l) { norm_.parameters(l); });
  }

  void init(std::uint64_t seed) {
    for (int i = 0; i < depth(); ++i)
      assign(i, block_storage(i), [&] { blocks_[i].init(seed); });
    assign(depth(), norm_storage(), [&] { norm_.init(seed); });
  }

  // x holds `batch` samples of L tokens (row b*L + l); x must stay alive until backward().
  // ctx: training or evaluation, and the keys of the dropout masks (evaluation by default).
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x, int batch, int L,
                 const DropoutContext& ctx = {}) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Encoder: input ", Impl::shape_of(x),
                  " has ", x.extent(1), " features, expected ", dim());
    const bool overlap = sharded() && fsdp_overlap();
    ConstMatrix<T, ExecSpace> h = x;
    for (int i = 0; i < depth(); ++i) {
      if (sharded()) units_[i].gather(space, block_storage(i));  // waits for a prefetch
      // The next unit (a block, or the norm: units_[depth()]) travels while this block computes.
      if (overlap) units_[i + 1].start_gather(space);
      h = blocks_[i].forward(space, h, batch, L, ctx);
      if (sharded()) units_[i].release(block_storage(i));
    }
    // The norm stays gathered until its backward, which comes next but for the head's.
    if (sharded()) units_.back().gather(space, norm_storage());
    return norm_.forward(space, h);
  }

  // Accumulates the parameter gradients; returns dL/dx.
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy) {
    if (!sharded()) {
      matrix d = norm_.backward(space, dy);
      for (int i = depth() - 1; i >= 0; --i) d = blocks_[i].backward(space, d);
      return d;
    }
    const bool overlap = fsdp_overlap();
    // Units in backward order: the norm (units_[depth()]), then the blocks from the last.
    // `reducing`: the unit whose gradient reduce-scatter is in flight (-1: none).
    int reducing = -1;
    matrix d;
    for (int u = depth(); u >= 0; --u) {
      const bool is_norm = u == depth();
      if (is_norm) {
        units_[u].begin_backward(space, norm_storage());
      } else {
        units_[u].begin_backward(space, block_storage(u));  // waits for a prefetch
      }
      if (overlap && u > 0) units_[u - 1].start_gather(space);
      d = is_norm ? norm_.backward(space, dy) : blocks_[u].backward(space, d);
      if (!overlap) {
        if (is_norm) {
          units_[u].end_backward(space, norm_storage());
        } else {
          units_[u].end_backward(space, block_storage(u));
        }
        continue;
      }
      if (is_norm) {
        units_[u].start_end_backward(space, norm_storage());
      } else {
        units_[u].start_end_backward(space, block_storage(u));
      }
      // The previous unit's reduction had this unit's backward to travel behind.
      if (reducing >= 0) units_[reducing].finish_end_backward(space);
      reducing = u;
    }
    if (reducing >= 0) units_[reducing].finish_end_backward(space);
    return d;
  }

  // Whole tensors, or under model sharding this rank's slices of them.
  void parameters(ParameterList<T, ExecSpace>& list) const {
    if (sharded()) {
      for (const auto& u : units_) u.parameters(list);
      return;
    }
    for (const auto& b : blocks_) b.parameters(list);
    norm_.parameters(list);
  }

  // This rank's work (its share of every block).
  double flops(std::size_t batch, std::size_t L) const {
    double f = norm_.flops(batch * L);
    for (const auto& b : blocks_) f += b.flops(batch, L);
    return f;
  }

  int depth() const { return static_cast<int>(blocks_.size()); }
  int dim() const { return norm_.dim(); }
  const Block<T, ExecSpace>& block(int i) const { return blocks_.at(i); }
  const LayerNorm<T, ExecSpace>& norm() const { return norm_; }
  // The tensor-parallel group (MPI_COMM_SELF unless one was given).
  const Communicator& tp() const { return Impl::require_tp(tp_, "Encoder", prefix_ + "blocks"); }
  // Whether the parameters are sharded (an fsdp group of more than one rank); block(i) and
  // norm() then hold values only while they compute.
  bool sharded() const { return !units_.empty(); }

 private:
  auto block_storage(int i) {
    return [this, i](auto& f) { blocks_[i].visit_storage(f); };
  }
  auto norm_storage() {
    return [this](auto& f) { norm_.visit_storage(f); };
  }
  // set() writes unit i's values: directly, or through its full buffer when sharded.
  template <class Visit, class Set>
  void assign(int i, Visit&& visit, Set&& set) {
    if (sharded()) {
      units_[i].assign(visit, set);
    } else {
      set();
    }
  }

  std::string prefix_;
  std::optional<Communicator> tp_;
  std::vector<Block<T, ExecSpace>> blocks_;
  LayerNorm<T, ExecSpace> norm_;
  std::vector<ShardedUnit<T, ExecSpace>> units_;  // blocks, then the norm; empty unless sharded
};

}  // namespace dchag

#endif
