#include <dchag/core/error.hpp>
#include <dchag/parallel/collectives.hpp>

#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "test_common.hpp"

namespace {
// doctest::Contains takes a C string; this one takes what the test computed.
doctest::Contains contains(const std::string& text) {
  return doctest::Contains(text.c_str());
}
}  // namespace

using namespace dchag_test;

namespace {

// Distinct, exactly representable values that depend on the rank and the flat index, so that a
// wrong block or a wrong element shows. Sums over 4 ranks are exact in float.
double value_of(int rank, std::size_t k) {
  return 0.5 * (rank + 1) + 0.25 * static_cast<double>(k % 97) - 3.0 * ((k + 2 * rank) % 5);
}

template <class View>
void fill(const View& v, const std::function<double(std::size_t)>& f) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t k = 0; k < h.size(); ++k)
    h.data()[k] = static_cast<typename View::value_type>(f(k));
  Kokkos::deep_copy(v, h);
}

// Largest |v[k] - expected(k)| over the flat (row-major) elements.
template <class View>
double max_error(const View& v, const std::function<double(std::size_t)>& expected) {
  auto h = to_host(v);
  double worst = 0;
  for (std::size_t k = 0; k < h.size(); ++k)
    worst = std::max(worst, std::abs(static_cast<double>(h.data()[k]) - expected(k)));
  return worst;
}

template <class Space, class T, class View>
void check_all_reduce(const dchag::Communicator& comm, const View& v) {
  CAPTURE(dchag::Impl::shape_of(v));
  Space space;
  const int p = comm.size(), r = comm.rank();
  fill(v, [&](std::size_t k) { return value_of(r, k); });
  dchag::all_reduce_sum(space, comm, v);
  CHECK(max_error(v, [&](std::size_t k) {
          double s = 0;
          for (int q = 0; q < p; ++q) s += value_of(q, k);
          return s;
        }) <= tol<T>());

  fill(v, [&](std::size_t k) { return value_of(r, k); });
  dchag::all_reduce_max(space, comm, v);
  CHECK(max_error(v, [&](std::size_t k) {
          double m = value_of(0, k);
          for (int q = 1; q < p; ++q) m = std::max(m, value_of(q, k));
          return m;
        }) == 0.0);
}

template <class Space, class T, class View>
void check_broadcast(const dchag::Communicator& comm, const View& v) {
  CAPTURE(dchag::Impl::shape_of(v));
  Space space;
  const int r = comm.rank();
  for (int root = 0; root < comm.size(); ++root) {
    fill(v, [&](std::size_t k) { return value_of(r, k); });
    dchag::broadcast(space, comm, v, root);
    CHECK(max_error(v, [&](std::size_t k) { return value_of(root, k); }) == 0.0);
  }
}

// local: this rank's block; full: p blocks along the first dimension.
template <class Space, class T, class Local, class Full>
void check_gather_scatter(const dchag::Communicator& comm, const Local& local,
                          const Full& full) {
  CAPTURE(dchag::Impl::shape_of(full));
  Space space;
  const int p = comm.size(), r = comm.rank();
  const std::size_t n = local.size();

  fill(local, [&](std::size_t k) { return value_of(r, k); });
  fill(full, [](std::size_t) { return -1e6; });
  dchag::all_gather(space, comm, local, full);
  CHECK(max_error(full, [&](std::size_t q) { return value_of(int(q / n), q % n); }) == 0.0);

  // Rank q's full holds value_of(q, .): block r of the sum is what this rank receives.
  fill(full, [&](std::size_t q) { return value_of(r, q); });
  fill(local, [](std::size_t) { return -1e6; });
  dchag::reduce_scatter_sum(space, comm, full, local);
  CHECK(max_error(local, [&](std::size_t k) {
          double s = 0;
          for (int q = 0; q < p; ++q) s += value_of(q, r * n + k);
          return s;
        }) <= tol<T>());
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("all_reduce_sum / all_reduce_max / broadcast on views of rank 1-3", C,
                          collectives_reduce) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const dchag::Communicator comm;
  dchag::View1<T, Space> v1("v1", 7);
  dchag::View2<T, Space> v2("v2", 3, 5);
  dchag::View3<T, Space> v3("v3", 3, 1, 5);
  dchag::View1<T, Space> empty("empty", 0);
  check_all_reduce<Space, T>(comm, v1);
  check_all_reduce<Space, T>(comm, v2);
  check_all_reduce<Space, T>(comm, v3);
  check_all_reduce<Space, T>(comm, empty);
  check_broadcast<Space, T>(comm, v1);
  check_broadcast<Space, T>(comm, v2);
  check_broadcast<Space, T>(comm, v3);

  // A LayoutLeft view is contiguous too: element-wise collectives take it.
  Kokkos::View<T**, Kokkos::LayoutLeft, dchag::MemorySpace<Space>> left("left", 4, 3);
  check_all_reduce<Space, T>(comm, left);

  // On a sub-communicator (here each rank alone: the size-1 path).
  const dchag::Communicator self(MPI_COMM_SELF);
  check_all_reduce<Space, T>(self, v2);
  check_broadcast<Space, T>(self, v3);
}
TEST_CASE_TEMPLATE_APPLY(collectives_reduce, AllCases);

TEST_CASE_TEMPLATE_DEFINE("all_gather / reduce_scatter_sum along the first dimension", C,
                          collectives_gather) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const dchag::Communicator comm;
  const std::size_t p = comm.size();
  {
    dchag::View1<T, Space> local("local", 5), full("full", 5 * p);
    check_gather_scatter<Space, T>(comm, local, full);
  }
  {
    dchag::View2<T, Space> local("local", 3, 7), full("full", 3 * p, 7);
    check_gather_scatter<Space, T>(comm, local, full);
  }
  {
    dchag::View3<T, Space> local("local", 1, 3, 5), full("full", p, 3, 5);
    check_gather_scatter<Space, T>(comm, local, full);
  }
  {
    // Different ranks, same size: a flat buffer gathered into a rank-3 view.
    dchag::View1<T, Space> local("local", 15);
    dchag::View3<T, Space> full("full", p, 3, 5);
    check_gather_scatter<Space, T>(comm, local, full);
  }
  {
    // The size-1 communicator copies local <-> full.
    const dchag::Communicator self(MPI_COMM_SELF);
    dchag::View2<T, Space> local("local", 3, 7), full("full", 3, 7);
    check_gather_scatter<Space, T>(self, local, full);
  }
}
TEST_CASE_TEMPLATE_APPLY(collectives_gather, AllCases);

TEST_CASE_TEMPLATE_DEFINE("all_gather in place and from a const view", C, collectives_in_place) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const std::size_t m = 3, cols = 5, n = m * cols;

  dchag::View2<T, Space> full("full", m * p, cols);
  fill(full, [](std::size_t) { return -1e6; });
  auto own = Kokkos::subview(full, std::make_pair(m * r, m * (r + 1)), Kokkos::ALL);
  fill(own, [&](std::size_t k) { return value_of(r, k); });
  dchag::all_gather(space, comm, own, full);
  CHECK(max_error(full, [&](std::size_t q) { return value_of(int(q / n), q % n); }) == 0.0);

  dchag::View2<T, Space> source("source", m, cols);
  fill(source, [&](std::size_t k) { return value_of(r, k); });
  Kokkos::View<const T**, Kokkos::LayoutRight, dchag::MemorySpace<Space>> constant = source;
  dchag::View2<T, Space> gathered("gathered", m * p, cols);
  dchag::all_gather(space, comm, constant, gathered);
  CHECK(max_error(gathered, [&](std::size_t q) { return value_of(int(q / n), q % n); }) == 0.0);
}
TEST_CASE_TEMPLATE_APPLY(collectives_in_place, AllCases);

TEST_CASE_TEMPLATE_DEFINE("collectives refuse bad views on every rank", C, collectives_refuse) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size();

  dchag::View2<T, Space> matrix("matrix", 4, 3);
  auto column = Kokkos::subview(matrix, Kokkos::ALL, 1);
  CHECK_THROWS_WITH_AS(dchag::all_reduce_sum(space, comm, column),
                       doctest::Contains("not contiguous"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::broadcast(space, comm, column, 0),
                       doctest::Contains("not contiguous"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::broadcast(space, comm, matrix, p),
                       contains("root " + std::to_string(p)), dchag::Error);

  dchag::View2<T, Space> local("local", 2, 3), wrong("wrong", 2 * p + 1, 3);
  CHECK_THROWS_WITH_AS(dchag::all_gather(space, comm, local, wrong),
                       contains("'wrong'[" + std::to_string(2 * p + 1) + ", 3]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::reduce_scatter_sum(space, comm, wrong, local),
                       doctest::Contains("elements"), dchag::Error);
  // Same size, blocks cut along another dimension.
  dchag::View2<T, Space> sideways("sideways", 2, 3 * p);
  if (p > 1)
    CHECK_THROWS_WITH_AS(dchag::all_gather(space, comm, local, sideways),
                         doctest::Contains("along the first dimension"), dchag::Error);
  // Column-major storage cannot be split along the first dimension.
  Kokkos::View<T**, Kokkos::LayoutLeft, dchag::MemorySpace<Space>> left("left", 2 * p, 3);
  CHECK_THROWS_WITH_AS(dchag::all_gather(space, comm, local, left),
                       doctest::Contains("row-major"), dchag::Error);
  // reduce_scatter's output must not overlap its input.
  dchag::View1<T, Space> flat_full("flat_full", 4 * p);
  auto inside = Kokkos::subview(flat_full, std::make_pair(0, 4));
  CHECK_THROWS_WITH_AS(dchag::reduce_scatter_sum(space, comm, flat_full, inside),
                       doctest::Contains("overlaps"), dchag::Error);

  // Nothing was left half-done: the next collective works.
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
}
TEST_CASE_TEMPLATE_APPLY(collectives_refuse, AllCases);

TEST_CASE_TEMPLATE_DEFINE("collectives refuse ranks that pass views of different sizes", C,
                          collectives_counts) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  if (p == 1) return;
  // The last rank holds one row more (a batch of another size): MPI would read or write past
  // the other ranks' buffers. Every rank must get the error instead, and nothing may hang.
  const int rows = r == p - 1 ? 3 : 2;
  dchag::View2<T, Space> v("v", rows, 3), local("local", rows, 3), full("full", rows * p, 3);
  const char* fragment = "the ranks pass views of different sizes";
  CHECK_THROWS_WITH_AS(dchag::all_reduce_sum(space, comm, v), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::broadcast(space, comm, v, 0), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::all_gather(space, comm, local, full), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::reduce_scatter_sum(space, comm, full, local),
                       doctest::Contains("6 to 9 elements"), dchag::Error);
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
}
TEST_CASE_TEMPLATE_APPLY(collectives_counts, AllCases);

// Rank q holds rows_of(q) rows: 2, 0, 1, 3 on four ranks (rank 1 holds none).
std::size_t rows_of(int q) { return std::size_t((2 * q + 2) % 5 == 4 ? 0 : (2 * q + 2) % 5); }

TEST_CASE_TEMPLATE_DEFINE("all_gatherv concatenates blocks of different sizes in rank order", C,
                          collectives_gatherv) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const std::size_t cols = 3, depth = 4, row = cols * depth;
  std::vector<std::size_t> counts;
  std::size_t total = 0;
  for (int q = 0; q < p; ++q) total += rows_of(q), counts.push_back(rows_of(q));
  // Row i of full is row (i - offset of q) of rank q's block: value_of(q, k) at element k.
  const auto expected = [&](std::size_t e) {
    std::size_t i = e / row, q = 0;
    while (i >= counts[q]) i -= counts[q++];
    return value_of(int(q), i * row + e % row);
  };
  dchag::View3<T, Space> local("local", counts[r], cols, depth), full("full", total, cols, depth);
  fill(local, [&](std::size_t k) { return value_of(r, k); });
  fill(full, [](std::size_t) { return -1e6; });
  dchag::CommStats::reset();
  dchag::all_gatherv(space, comm, local, full, counts);
  CHECK(max_error(full, expected) == 0.0);
  // What this rank receives: everything but its own block.
  CHECK(dchag::CommStats::bytes() == (total - counts[r]) * row * sizeof(T));

  // In place: this rank's block already sits in full.
  fill(full, [](std::size_t) { return -1e6; });
  std::size_t offset = 0;
  for (int q = 0; q < r; ++q) offset += counts[q];
  auto own = Kokkos::subview(full, std::make_pair(offset, offset + counts[r]), Kokkos::ALL,
                             Kokkos::ALL);
  fill(own, [&](std::size_t k) { return value_of(r, k); });
  dchag::all_gatherv(space, comm, own, full, counts);
  CHECK(max_error(full, expected) == 0.0);

  // Equal counts give all_gather's result.
  dchag::View2<T, Space> l2("l2", 2, cols), f2("f2", 2 * p, cols), g2("g2", 2 * p, cols);
  fill(l2, [&](std::size_t k) { return value_of(r, k); });
  dchag::all_gather(space, comm, l2, f2);
  dchag::all_gatherv(space, comm, l2, g2, std::vector<std::size_t>(p, 2));
  CHECK(max_error(g2, [&](std::size_t k) { return double(to_host(f2).data()[k]); }) == 0.0);

  // Bad input, on every rank: wrong number of counts, a full view of another size, a local
  // view that is not this rank's count, counts that differ between ranks.
  CHECK_THROWS_WITH_AS(dchag::all_gatherv(space, comm, local, full,
                                          std::vector<std::size_t>(p + 1, 1)),
                       contains(std::to_string(p + 1) + " counts"), dchag::Error);
  dchag::View3<T, Space> longer("longer", total + 1, cols, depth);
  CHECK_THROWS_WITH_AS(dchag::all_gatherv(space, comm, local, longer, counts),
                       doctest::Contains("must be the blocks of counts"), dchag::Error);
  if (p > 1) {
    auto other = counts;
    if (r == 0) other[0] += 1;
    dchag::View3<T, Space> lo("lo", other[r], cols, depth);
    std::size_t t = 0;
    for (auto c : other) t += c;
    dchag::View3<T, Space> fo("fo", t, cols, depth);
    CHECK_THROWS_WITH_AS(dchag::all_gatherv(space, comm, lo, fo, other),
                         doctest::Contains("different counts"), dchag::Error);
  }
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
  dchag::CommStats::reset();
}
TEST_CASE_TEMPLATE_APPLY(collectives_gatherv, AllCases);

TEST_CASE("scalar all_reduce_sum / max / min") {
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  CHECK(dchag::all_reduce_sum(comm, r + 0.5) == doctest::Approx(p * (p - 1) / 2.0 + 0.5 * p));
  CHECK(dchag::all_reduce_max(comm, -1.0 * r) == 0.0);
  CHECK(dchag::all_reduce_min(comm, -1.0 * r) == -(p - 1.0));
  CHECK(dchag::all_reduce_max(comm, r == p - 1 ? 7.0 : 2.0) == 7.0);
}

TEST_CASE("CommStats counts the bytes a ring algorithm sends per rank") {
  using Space = Kokkos::DefaultHostExecutionSpace;
  Space space;
  const dchag::Communicator comm;
  const std::uint64_t p = comm.size();
  dchag::CommStats::reset();
  CHECK(dchag::CommStats::bytes() == 0u);
  CHECK(dchag::CommStats::calls() == 0u);

  dchag::View1<double, Space> x("x", 12);
  dchag::all_reduce_sum(space, comm, x);  // 2 (p-1)/p * 96
  std::uint64_t expected = 2 * (p - 1) * 96 / p;
  CHECK(dchag::CommStats::bytes() == expected);

  dchag::View2<float, Space> local("local", 3, 5), full("full", 3 * p, 5);
  dchag::all_gather(space, comm, local, full);  // (p-1)/p * n_full = (p-1) * 60
  expected += (p - 1) * 60;
  CHECK(dchag::CommStats::bytes() == expected);
  dchag::reduce_scatter_sum(space, comm, full, local);  // the same
  expected += (p - 1) * 60;
  CHECK(dchag::CommStats::bytes() == expected);

  dchag::broadcast(space, comm, x, 0);  // (p-1)/p * 96
  expected += (p - 1) * 96 / p;
  dchag::all_reduce_max(comm, 1.0);  // 2 (p-1)/p * 8
  expected += 2 * (p - 1) * 8 / p;
  CHECK(dchag::CommStats::bytes() == expected);
  CHECK(dchag::CommStats::calls() == 5u);
  if (p == 1) CHECK(dchag::CommStats::bytes() == 0u);

  dchag::CommStats::reset();
  CHECK(dchag::CommStats::bytes() == 0u);
  CHECK(dchag::CommStats::calls() == 0u);
}
