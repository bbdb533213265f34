#ifndef DCHAG_CORE_SCALAR_TRAITS_HPP
#define DCHAG_CORE_SCALAR_TRAITS_HPP

// What the library needs to know about a scalar type, in one place, so that adding a format
// means one specialisation here and not an edit in every kernel:
//   storage_type  what views of weights, activations and gradients hold;
//   compute_type  what one element is converted to for arithmetic;
//   accum_type    what sums (GEMM, softmax, LayerNorm, reductions, losses) are kept in;
//   master_type   what the optimizer keeps weights and moments in;
//   dtype         the safetensors name of storage_type;
//   needs_loss_scaling  whether small gradients underflow without scaling (IEEE half).
// The MPI datatype lives with the collectives (parallel/collectives.hpp), since core does not
// depend on MPI: a 16-bit type travels as MPI_UINT16_T, and sums of it are taken in float.

#include <type_traits>

#include <dchag/core/low_precision.hpp>

namespace dchag {

template <class T>
struct ScalarTraits;

template <>
struct ScalarTraits<double> {
  using storage_type = double;
  using compute_type = double;
  using accum_type = double;
  using master_type = double;
  static constexpr const char* dtype = "F64";
  static constexpr const char* name = "float64";
  static constexpr bool needs_loss_scaling = false;
};

template <>
struct ScalarTraits<float> {
  using storage_type = float;
  using compute_type = float;
  using accum_type = float;
  using master_type = float;
  static constexpr const char* dtype = "F32";
  static constexpr const char* name = "float32";
  static constexpr bool needs_loss_scaling = false;
};

template <>
struct ScalarTraits<bf16> {
  using storage_type = bf16;
  using compute_type = float;
  using accum_type = float;
  using master_type = float;
  static constexpr const char* dtype = "BF16";
  static constexpr const char* name = "bfloat16";
  static constexpr bool needs_loss_scaling = false;
};

template <>
struct ScalarTraits<fp16> {
  using storage_type = fp16;
  using compute_type = float;
  using accum_type = float;
  using master_type = float;
  static constexpr const char* dtype = "F16";
  static constexpr const char* name = "float16";
  static constexpr bool needs_loss_scaling = true;
};

template <class T>
using accum_t = typename ScalarTraits<std::remove_cv_t<T>>::accum_type;
template <class T>
using compute_t = typename ScalarTraits<std::remove_cv_t<T>>::compute_type;
template <class T>
using master_t = typename ScalarTraits<std::remove_cv_t<T>>::master_type;

// A scalar a model, its data and its files can be made of: the four ScalarTraits knows.
template <class T>
constexpr bool is_model_scalar_v =
    std::is_same<T, float>::value || std::is_same<T, double>::value ||
    std::is_same<T, bf16>::value || std::is_same<T, fp16>::value;

// A storage-only type: kept in 16 bits, computed in a wider type.
template <class T>
constexpr bool is_low_precision_v =
    !std::is_same<typename ScalarTraits<std::remove_cv_t<T>>::compute_type,
                  std::remove_cv_t<T>>::value;

}  // namespace dchag

#endif
