#ifndef DCHAG_MODEL_ENCODER_HPP
#define DCHAG_MODEL_ENCODER_HPP

// The transformer trunk of ClimaX: `depth` pre-LayerNorm ViT blocks "blocks.{i}" and a final
// LayerNorm "norm". The embeddings in front of it belong to the model, not to the encoder.
// Under tensor parallelism every block is split over the same group `tp` (see vit_block.hpp);
// the final norm is replicated.

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
#include <dchag/model/vit_block.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/communicator.hpp>

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
  Encoder(int dim, int depth, int heads, double mlp_ratio = 4.0, std::string prefix = "",
          double eps = 1e-5, Communicator tp = Communicator(MPI_COMM_SELF))
      : prefix_(std::move(prefix)), tp_(std::move(tp)) {
    // The depth decides how many blocks, hence how many collectives, follow: agree on it (and
    // on the rest) before anything can throw on some ranks only.
    if (tp_->size() > 1)
      check_agreement(*tp_, "the configuration of Encoder '" + prefix_ + "blocks'",
                      Impl::concat("dim = ", dim, ", depth = ", depth, ", heads = ", heads,
                                   ", mlp_ratio = ", Impl::exact_text(mlp_ratio),
                                   ", eps = ", Impl::exact_text(eps)));
    Impl::require(depth >= 0, "Encoder '", prefix_, "blocks': depth must not be negative, got ",
                  depth);
    blocks_.reserve(depth);
    for (int i = 0; i < depth; ++i)
      blocks_.emplace_back(prefix_ + "blocks." + std::to_string(i), dim, heads, mlp_ratio, eps,
                           *tp_);
    norm_ = LayerNorm<T, ExecSpace>(prefix_ + "norm", dim, eps);
  }

  void init(std::uint64_t seed) {
    for (auto& b : blocks_) b.init(seed);
    norm_.init(seed);
  }

  // x holds `batch` samples of L tokens (row b*L + l); x must stay alive until backward().
  matrix forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& x, int batch, int L) {
    Impl::require(x.extent(1) == std::size_t(dim()), "Encoder: input ", Impl::shape_of(x),
                  " has ", x.extent(1), " features, expected ", dim());
    ConstMatrix<T, ExecSpace> h = x;
    for (auto& b : blocks_) h = b.forward(space, h, batch, L);
    return norm_.forward(space, h);
  }

  // Accumulates the parameter gradients; returns dL/dx.
  matrix backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dy) {
    matrix d = norm_.backward(space, dy);
    for (auto b = blocks_.rbegin(); b != blocks_.rend(); ++b) d = b->backward(space, d);
    return d;
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
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

 private:
  std::string prefix_;
  std::optional<Communicator> tp_;
  std::vector<Block<T, ExecSpace>> blocks_;
  LayerNorm<T, ExecSpace> norm_;
};

}  // namespace dchag

#endif
