#ifndef DCHAG_TESTS_TEST_COMMON_HPP
#define DCHAG_TESTS_TEST_COMMON_HPP

#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <Kokkos_Core.hpp>
#include <cstdint>
#include <random>
#include <tuple>
#include <type_traits>
#include <utility>

#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/low_precision.hpp>
#include <dchag/core/view.hpp>

namespace dchag_test {

// One test case, every enabled execution space, float and double.
template <class Space, class Scalar>
struct Case {
  using space = Space;
  using scalar = Scalar;
};

// Every backend the Kokkos install enables, each on its own: cluster installs are often
// OpenMP-only or CUDA-only, without Serial.
#if defined(KOKKOS_ENABLE_SERIAL)
using SerialBackend = std::tuple<Kokkos::Serial>;
#else
using SerialBackend = std::tuple<>;
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
using OpenMPBackend = std::tuple<Kokkos::OpenMP>;
#else
using OpenMPBackend = std::tuple<>;
#endif
#if defined(KOKKOS_ENABLE_CUDA)
using CudaBackend = std::tuple<Kokkos::Cuda>;
#else
using CudaBackend = std::tuple<>;
#endif
#if defined(KOKKOS_ENABLE_HIP)
using HipBackend = std::tuple<dchag::HipExecSpace>;
#else
using HipBackend = std::tuple<>;
#endif
using Backends = decltype(std::tuple_cat(std::declval<SerialBackend>(),
                                         std::declval<OpenMPBackend>(),
                                         std::declval<CudaBackend>(), std::declval<HipBackend>()));

// PerSpace<Space> (a tuple of cases) for every enabled backend, concatenated.
template <template <class> class PerSpace, class Spaces>
struct OnEachBackend;
template <template <class> class PerSpace, class... Spaces>
struct OnEachBackend<PerSpace, std::tuple<Spaces...>> {
  using type = decltype(std::tuple_cat(std::declval<PerSpace<Spaces>>()...));
};

template <class Space>
using BothScalars = std::tuple<Case<Space, float>, Case<Space, double>>;
// The 16-bit storage types (kernels with float accumulation).
template <class Space>
using LowPrecision = std::tuple<Case<Space, dchag::bf16>, Case<Space, dchag::fp16>>;

using AllCases = typename OnEachBackend<BothScalars, Backends>::type;
using LowPrecisionCases = typename OnEachBackend<LowPrecision, Backends>::type;

// Gradient checks run in double only: finite differences in float measure rounding, not bugs.
template <class Tuple>
struct DoubleOnly;
template <class... Cs>
struct DoubleOnly<std::tuple<Cs...>> {
  using type = decltype(std::tuple_cat(
      std::declval<std::conditional_t<std::is_same<typename Cs::scalar, double>::value,
                                       std::tuple<Cs>, std::tuple<>>>()...));
};
using DoubleCases = typename DoubleOnly<AllCases>::type;

// Tolerances that pass float rounding on the shapes we test but catch any wrong index. For the
// 16-bit types, against a reference computed in double from the same rounded inputs: a result
// rounded once to 8 (bf16) or 11 (fp16) significant bits is within 2^-9 resp. 2^-12 of it;
// four of those leave room for an intermediate rounding (a stored exp(), a saved statistic),
// while a wrong index is off by O(1).
template <class T>
constexpr double tol() {
  if (std::is_same<T, dchag::bf16>::value) return 4.0 / 512;
  if (std::is_same<T, dchag::fp16>::value) return 4.0 / 4096;
  return std::is_same<T, float>::value ? 2e-4 : 1e-11;
}

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Random values in [lo, hi), never constant, reproducible from the seed.
template <class View>
void fill_random(const View& v, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  auto h = Kokkos::create_mirror_view(v);
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  auto* p = h.data();
  for (std::size_t i = 0; i < h.span(); ++i) p[i] = static_cast<typename View::value_type>(dist(gen));
  Kokkos::deep_copy(v, h);
}

template <class View>
auto to_host(const View& v) {
  auto h = Kokkos::create_mirror_view(v);
  Kokkos::deep_copy(h, v);
  return h;
}

// A rank-2 view as an Eigen matrix in double (references are computed in double).
template <class View>
Matrix<double> to_eigen(const View& v) {
  auto h = to_host(v);
  Matrix<double> m(h.extent(0), h.extent(1));
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j) m(i, j) = static_cast<double>(h(i, j));
  return m;
}

template <class View>
Eigen::VectorXd to_eigen_vector(const View& v) {
  auto h = to_host(v);
  Eigen::VectorXd x(h.extent(0));
  for (std::size_t i = 0; i < h.extent(0); ++i) x(i) = static_cast<double>(h(i));
  return x;
}

// The other way: an Eigen matrix (or vector, into a rank-1 view) copied into a view of the same
// shape, converted to its scalar.
template <class View, class E>
void from_eigen(const View& v, const Eigen::MatrixBase<E>& m) {
  auto h = Kokkos::create_mirror_view(v);
  using T = typename View::non_const_value_type;
  if constexpr (View::rank == 1) {
    REQUIRE(std::size_t(m.size()) == h.extent(0));
    for (std::size_t i = 0; i < h.extent(0); ++i) h(i) = static_cast<T>(m(i));
  } else {
    REQUIRE((std::size_t(m.rows()) == h.extent(0) && std::size_t(m.cols()) == h.extent(1)));
    for (std::size_t i = 0; i < h.extent(0); ++i)
      for (std::size_t j = 0; j < h.extent(1); ++j) h(i, j) = static_cast<T>(m(i, j));
  }
  Kokkos::deep_copy(v, h);
}

// Largest |a - b| relative to the largest |b| (at least 1).
template <class A, class B>
double rel_diff(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double scale = std::max(1.0, b.cwiseAbs().maxCoeff());
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

}  // namespace dchag_test

#endif
