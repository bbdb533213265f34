#include <dchag/core/error.hpp>
#include <dchag/core/low_precision.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/parallel/collectives.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "test_common.hpp"

// Collectives on bf16 and fp16 views: what only moves must arrive bit for bit; sums must be the
// float sum of the (16-bit) inputs, rounded once.

namespace {

using Space = Kokkos::DefaultExecutionSpace;
template <class T>
using V1 = dchag::View1<T, Space>;

// Bit patterns of finite values of both formats in [2^-4, 2^4) (exponent fields 123..130 for
// bf16, 11..18 for fp16), both signs, depending on rank and index. Four of them sum exactly in
// float: 16 bits of span plus 2 of carry for bf16, 19 plus 2 for fp16, within float's 24.
template <class T>
std::uint16_t bits_of(int rank, std::size_t k) {
  const std::uint32_t h = static_cast<std::uint32_t>((k + 1) * 2654435761u + rank * 40503u);
  const std::uint32_t sign = (h >> 31) << 15;
  if (std::is_same<T, dchag::bf16>::value)
    return static_cast<std::uint16_t>(sign | ((123u + (h >> 8) % 8u) << 7) | (h & 0x7fu));
  return static_cast<std::uint16_t>(sign | ((11u + (h >> 12) % 8u) << 10) | (h & 0x3ffu));
}

template <class T>
std::vector<std::uint16_t> host_bits(const V1<T>& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  std::vector<std::uint16_t> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = h(i).bits;
  return out;
}

template <class T, class F>
void set_bits(const V1<T>& v, F&& f) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < h.size(); ++i) h(i) = T::from_bits(f(i));
  Kokkos::deep_copy(v, h);
}

template <class T>
float value(std::uint16_t b) {
  return float(T::from_bits(b));
}

// What a 16-bit sum over the ranks must give at element k of rank-dependent inputs.
template <class T>
std::uint16_t rounded_sum(int p, std::size_t k) {
  float s = 0;
  for (int q = 0; q < p; ++q) s += value<T>(bits_of<T>(q, k));
  return T(s).bits;
}

}  // namespace

TEST_CASE_TEMPLATE("16-bit gathers and broadcasts are bit-exact", T, dchag::bf16, dchag::fp16) {
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const std::size_t n = 37;
  V1<T> local("local", n), full("full", n * p);
  set_bits(local, [&](std::size_t k) { return bits_of<T>(r, k); });

  dchag::all_gather(space, comm, local, full);
  auto got = host_bits(full);
  for (std::size_t e = 0; e < got.size(); ++e) REQUIRE(got[e] == bits_of<T>(int(e / n), e % n));

  set_bits(full, [](std::size_t) { return std::uint16_t(0); });
  auto request = dchag::start_all_gather(space, comm, local, full);
  request.wait();
  got = host_bits(full);
  for (std::size_t e = 0; e < got.size(); ++e) REQUIRE(got[e] == bits_of<T>(int(e / n), e % n));

  // Rank q holds q + 1 elements.
  std::vector<std::size_t> counts;
  std::size_t total = 0;
  for (int q = 0; q < p; ++q) counts.push_back(std::size_t(q + 1)), total += std::size_t(q + 1);
  V1<T> mine("mine", counts[r]), all("all", total);
  set_bits(mine, [&](std::size_t k) { return bits_of<T>(r, k); });
  dchag::all_gatherv(space, comm, mine, all, counts);
  got = host_bits(all);
  std::size_t e = 0;
  for (int q = 0; q < p; ++q)
    for (std::size_t k = 0; k < counts[q]; ++k, ++e) REQUIRE(got[e] == bits_of<T>(q, k));

  // Includes NaN and infinity patterns: a broadcast does not look at the values.
  for (int root = 0; root < p; ++root) {
    V1<T> v("v", n);
    set_bits(v, [&](std::size_t k) {
      return k < 2 ? std::uint16_t(0x7fc1u + k + r) : bits_of<T>(r, k);
    });
    dchag::broadcast(space, comm, v, root);
    got = host_bits(v);
    for (std::size_t k = 0; k < n; ++k)
      REQUIRE(got[k] == (k < 2 ? std::uint16_t(0x7fc1u + k + root) : bits_of<T>(root, k)));
  }
}

TEST_CASE_TEMPLATE("16-bit sums are float sums of the inputs, rounded once", T, dchag::bf16,
                   dchag::fp16) {
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const std::size_t n = 53;
  const auto input = [&](std::size_t k) { return bits_of<T>(r, k); };

  V1<T> v("v", n);
  set_bits(v, input);
  dchag::all_reduce_sum(space, comm, v);
  auto got = host_bits(v);
  for (std::size_t k = 0; k < n; ++k) REQUIRE(got[k] == rounded_sum<T>(p, k));

  set_bits(v, input);
  auto request = dchag::start_all_reduce_sum(space, comm, v);
  request.wait();
  got = host_bits(v);
  for (std::size_t k = 0; k < n; ++k) REQUIRE(got[k] == rounded_sum<T>(p, k));

  V1<T> full("full", n * p), local("local", n);
  set_bits(full, input);
  dchag::reduce_scatter_sum(space, comm, full, local);
  got = host_bits(local);
  for (std::size_t k = 0; k < n; ++k) REQUIRE(got[k] == rounded_sum<T>(p, r * n + k));

  set_bits(local, [](std::size_t) { return std::uint16_t(0); });
  auto scatter = dchag::start_reduce_scatter_sum(space, comm, full, local);
  scatter.wait();
  got = host_bits(local);
  for (std::size_t k = 0; k < n; ++k) REQUIRE(got[k] == rounded_sum<T>(p, r * n + k));

  // 1 on rank 0 and 3/8 of its ulp on the others: each partial sum of one more rank rounds
  // back to 1 in 16 bits, but the float sum of four ranks exceeds half an ulp and rounds up.
  const float ulp = std::is_same<T, dchag::bf16>::value ? 0x1p-7f : 0x1p-10f;
  V1<T> tiny("tiny", 1);
  set_bits(tiny, [&](std::size_t) { return T(r == 0 ? 1.0f : 0.375f * ulp).bits; });
  dchag::all_reduce_sum(space, comm, tiny);
  const float expected = float(T(1.0f + 0.375f * ulp * float(p - 1)));
  CHECK(value<T>(host_bits(tiny)[0]) == expected);
  if (p == 4) CHECK(expected == 1.0f + ulp);

  // max through float too: the largest input, exactly.
  set_bits(v, input);
  dchag::all_reduce_max(space, comm, v);
  got = host_bits(v);
  for (std::size_t k = 0; k < n; ++k) {
    float m = value<T>(bits_of<T>(0, k));
    for (int q = 1; q < p; ++q) m = std::max(m, value<T>(bits_of<T>(q, k)));
    REQUIRE(value<T>(got[k]) == m);
  }
}

TEST_CASE("16-bit collectives refuse ranks that pass views of different sizes") {
  using T = dchag::bf16;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  if (p == 1) return;
  const std::size_t n = r == p - 1 ? 9 : 6;
  V1<T> v("v", n), local("local", n), full("full", n * p);
  const char* fragment = "the ranks pass views of different sizes";
  CHECK_THROWS_WITH_AS(dchag::all_reduce_sum(space, comm, v), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::start_all_reduce_sum(space, comm, v), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::broadcast(space, comm, v, 0), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::all_gather(space, comm, local, full), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::start_all_gather(space, comm, local, full),
                       doctest::Contains(fragment), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::reduce_scatter_sum(space, comm, full, local),
                       doctest::Contains("6 to 9 elements"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::start_reduce_scatter_sum(space, comm, full, local),
                       doctest::Contains("6 to 9 elements"), dchag::Error);
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
}

#include <dchag/train/loss_scaler.hpp>

#include <limits>

TEST_CASE("LossScaler: an Inf gradient on one rank makes every rank skip the step") {
  using T = dchag::fp16;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  V1<T> w("w", 11), g("g", 11);
  dchag::ParameterList<T, Space> params;
  dchag::Impl::add_parameter(params, "w", w, g, false);
  const dchag::ParameterTable<T, Space> table(params);
  dchag::LossScaler<T> scaler;
  set_bits(g, [](std::size_t) { return T(1.0f).bits; });
  CHECK(scaler.check_finite(space, table, comm));
  // Only the last rank overflows.
  set_bits(g, [&](std::size_t k) {
    return r == p - 1 && k == 4 ? T(std::numeric_limits<float>::infinity()).bits : T(1.0f).bits;
  });
  const bool finite = scaler.check_finite(space, table, comm);
  CHECK_FALSE(finite);
  scaler.update(finite);
  CHECK(scaler.scale() == 32768.0);
  // The same verdict everywhere: the scales agree.
  CHECK(dchag::all_reduce_max(comm, scaler.scale()) == dchag::all_reduce_min(comm, scaler.scale()));
}

#include <dchag/train/gradient_sync.hpp>

TEST_CASE("bf16 data-parallel gradient averaging sums in float and rounds once") {
  using T = dchag::bf16;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const dchag::ProcessGrid grid(comm, 1, 1, p);
  V1<T> w1("w1", 29), g1("g1", 29), w2("w2", 5), g2("g2", 5);
  dchag::ParameterList<T, Space> params;
  dchag::Impl::add_parameter(params, "a", w1, g1, true);
  dchag::Impl::add_parameter(params, "b", w2, g2, false);
  set_bits(g1, [&](std::size_t k) { return bits_of<T>(r, k); });
  set_bits(g2, [&](std::size_t k) { return bits_of<T>(r, 100 + k); });
  dchag::GradientSync<T, Space> sync;
  sync.average(space, grid, params);
  const float inverse = 1.0f / float(p);
  const auto a = host_bits(g1), b = host_bits(g2);
  for (std::size_t k = 0; k < a.size(); ++k) {
    float s = 0;
    for (int q = 0; q < p; ++q) s += value<T>(bits_of<T>(q, k));
    REQUIRE(a[k] == T(s * inverse).bits);
  }
  for (std::size_t k = 0; k < b.size(); ++k) {
    float s = 0;
    for (int q = 0; q < p; ++q) s += value<T>(bits_of<T>(q, 100 + k));
    REQUIRE(b[k] == T(s * inverse).bits);
  }
  // The norm of the averaged gradients, the same on every rank.
  const double norm = dchag::global_grad_norm(space, grid, params);
  CHECK(dchag::all_reduce_max(comm, norm) == dchag::all_reduce_min(comm, norm));
}
