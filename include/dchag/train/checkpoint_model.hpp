#ifndef DCHAG_TRAIN_CHECKPOINT_MODEL_HPP
#define DCHAG_TRAIN_CHECKPOINT_MODEL_HPP

// What save_checkpoint and load_checkpoint need of a model, so that any model that has it can
// be saved and resumed (ChannelViT and ChannelMAE do):
//   typedefs scalar, execution_space and policy (the parameters' scalar and space; the policy
//     names the aggregator the file records);
//   parameters() -> ParameterList<scalar, execution_space>, this rank's parameters under their
//     logical names and shapes;
//   config() -> const ModelConfig&, grid() -> const ProcessGrid&;
//   static kind() -> the model's name in the file ("channel_vit", "channel_mae"), so that a file
//     of one kind of model is refused by another with a message saying so, instead of a list of
//     tensors that do not match.
// A model without one of them is refused at compile time by a static_assert naming the member,
// rather than by an error deep inside the checkpoint code.

#include <string>
#include <type_traits>
#include <utility>

#include <dchag/core/parameter.hpp>
#include <dchag/model/config.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>

namespace dchag {
namespace Impl {

template <class Model, class = void>
struct has_scalar_typedefs : std::false_type {};
template <class Model>
struct has_scalar_typedefs<
    Model, std::void_t<typename Model::scalar, typename Model::execution_space>>
    : std::true_type {};

template <class Model, class = void>
struct has_policy_typedef : std::false_type {};
template <class Model>
struct has_policy_typedef<Model, std::void_t<typename Model::policy>> : std::true_type {};

template <class Model, class = void>
struct has_parameter_list : std::false_type {};
template <class Model>
struct has_parameter_list<Model, std::enable_if_t<has_scalar_typedefs<Model>::value>>
    : std::is_convertible<decltype(std::declval<const Model&>().parameters()),
                          ParameterList<typename Model::scalar, typename Model::execution_space>> {
};

template <class Model, class = void>
struct has_model_config : std::false_type {};
template <class Model>
struct has_model_config<Model, std::void_t<decltype(std::declval<const Model&>().config())>>
    : std::is_convertible<decltype(std::declval<const Model&>().config()), const ModelConfig&> {};

template <class Model, class = void>
struct has_process_grid : std::false_type {};
template <class Model>
struct has_process_grid<Model, std::void_t<decltype(std::declval<const Model&>().grid())>>
    : std::is_convertible<decltype(std::declval<const Model&>().grid()), const ProcessGrid&> {};

template <class Model, class = void>
struct has_model_kind : std::false_type {};
template <class Model>
struct has_model_kind<Model, std::void_t<decltype(Model::kind())>>
    : std::is_convertible<decltype(Model::kind()), std::string> {};

// Fails to compile, naming each missing member, unless Model can be checkpointed.
template <class Model>
constexpr bool require_checkpointable() {
  static_assert(has_scalar_typedefs<Model>::value,
                "dchag checkpoints: the model needs typedefs 'scalar' and 'execution_space'");
  static_assert(has_policy_typedef<Model>::value,
                "dchag checkpoints: the model needs a typedef 'policy' (its parallel policy)");
  static_assert(has_parameter_list<Model>::value,
                "dchag checkpoints: the model needs 'parameters() const' returning a "
                "ParameterList<scalar, execution_space>");
  static_assert(has_model_config<Model>::value,
                "dchag checkpoints: the model needs 'config() const' returning a ModelConfig");
  static_assert(has_process_grid<Model>::value,
                "dchag checkpoints: the model needs 'grid() const' returning a ProcessGrid");
  static_assert(has_model_kind<Model>::value,
                "dchag checkpoints: the model needs 'static kind()', its name in the file");
  return true;
}

// The optimizer a model's checkpoint holds: AdamW of the model's scalar and space (void when
// the model has no such typedefs, so that require_checkpointable, not overload resolution,
// says what is missing). A nested type, so the optimizer argument takes no part in template
// deduction and a literal nullptr works.
template <class Model, class = void>
struct checkpoint_optimizer {
  using type = void;
};
template <class Model>
struct checkpoint_optimizer<Model, std::enable_if_t<has_scalar_typedefs<Model>::value>> {
  using type = AdamW<typename Model::scalar, typename Model::execution_space>;
};
template <class Model>
using checkpoint_optimizer_t = typename checkpoint_optimizer<Model>::type;

}  // namespace Impl
}  // namespace dchag

#endif
