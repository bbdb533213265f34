#ifndef DCHAG_DCHAG_HPP
#define DCHAG_DCHAG_HPP

// Umbrella header: the whole public interface of dchag, in the order data flows through it.

#include <dchag/core/error.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/view.hpp>

#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/gemm.hpp>
#include <dchag/kernels/layer_norm.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/kernels/softmax.hpp>

#endif
