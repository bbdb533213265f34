#ifndef DCHAG_CORE_PARAMETER_HPP
#define DCHAG_CORE_PARAMETER_HPP

// A trainable tensor as the optimiser, the checkpoint code and the gradient checks see it: a flat
// view of the values and of the gradient, under its PyTorch (ClimaX) name and logical shape.
// Layers own the storage; a Parameter only refers to it, so a ParameterList is rebuilt from the
// model whenever it is needed and never outlives the model.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>

namespace dchag {

// A box of a tensor's logical (un-sharded) index space: start and extent per dimension.
struct LogicalBox {
  std::vector<std::size_t> start;
  std::vector<std::size_t> extents;

  std::size_t size() const {
    std::size_t n = 1;
    for (auto e : extents) n *= e;
    return n;
  }
};

template <class T, class ExecSpace>
struct Parameter {
  std::string name;
  std::vector<std::size_t> shape;  // logical shape, as in the checkpoint and in PyTorch
  Unmanaged<T*, ExecSpace> value;
  Unmanaged<T*, ExecSpace> grad;
  // AdamW's decoupled weight decay applies to weight matrices only: never to norms, biases or
  // embeddings (as in ClimaX and timm).
  bool decay = false;
  // Which parts of the logical tensor this rank holds, stored one box after the other, each
  // row-major, in `value`. Empty: `value` is the whole logical tensor.
  std::vector<LogicalBox> pieces;
  // True when every logical element lives on exactly one rank of the tensor-parallel group
  // (column/row-parallel weights, channel-owned weights); false when each TP rank holds a
  // replica. Decides how the global gradient norm and checkpoints combine the ranks.
  bool partitioned = false;
  // True when the ranks of the fsdp group each hold a different part (model sharding, see
  // parallel/sharded_unit.hpp): every element of this rank's tensor-parallel share then lives
  // on exactly one rank of the fsdp group.
  bool sharded = false;

  std::size_t size() const { return value.extent(0); }
};

template <class T, class ExecSpace>
using ParameterList = std::vector<Parameter<T, ExecSpace>>;

namespace Impl {

// The box that is the whole tensor of `shape`.
inline LogicalBox whole_box(const std::vector<std::size_t>& shape) {
  return LogicalBox{std::vector<std::size_t>(shape.size(), 0), shape};
}

template <class T, class ExecSpace, class ValueView, class GradView>
void add_parameter(ParameterList<T, ExecSpace>& list, std::string name, const ValueView& value,
                   const GradView& grad, bool decay) {
  std::vector<std::size_t> shape;
  for (unsigned r = 0; r < ValueView::rank; ++r) shape.push_back(value.extent(r));
  list.push_back({std::move(name), std::move(shape),
                  Unmanaged<T*, ExecSpace>(value.data(), value.size()),
                  Unmanaged<T*, ExecSpace>(grad.data(), grad.size()), decay, {}, false, false});
}

// A parameter of which this rank holds `pieces` of the logical tensor `shape`.
template <class T, class ExecSpace, class ValueView, class GradView>
void add_partitioned_parameter(ParameterList<T, ExecSpace>& list, std::string name,
                               std::vector<std::size_t> shape, std::vector<LogicalBox> pieces,
                               const ValueView& value, const GradView& grad, bool decay) {
  std::size_t held = 0;
  for (const auto& b : pieces) {
    require(b.start.size() == shape.size() && b.extents.size() == shape.size(), "parameter '",
            name, "': a piece's rank differs from the tensor's");
    for (std::size_t d = 0; d < shape.size(); ++d)
      require(b.start[d] + b.extents[d] <= shape[d], "parameter '", name, "': piece dimension ",
              d, " [", b.start[d], ", ", b.start[d] + b.extents[d], ") exceeds ", shape[d]);
    held += b.size();
  }
  require(held == value.size(), "parameter '", name, "': pieces hold ", held,
          " values but the local tensor has ", value.size());
  list.push_back({std::move(name), std::move(shape),
                  Unmanaged<T*, ExecSpace>(value.data(), value.size()),
                  Unmanaged<T*, ExecSpace>(grad.data(), grad.size()), decay, std::move(pieces),
                  true, false});
}

}  // namespace Impl
}  // namespace dchag

#endif
