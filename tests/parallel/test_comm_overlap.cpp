// Communication that overlaps compute: the non-blocking collectives give the blocking ones'
// results, CommTimer sees the time a rank waits, and a sharded model that prefetches its units'
// gathers and defers their gradient reductions (dchag::set_fsdp_overlap) trains as one rank does.
#include <dchag/core/error.hpp>
#include <dchag/layers/layer_norm.hpp>
#include <dchag/parallel/collectives.hpp>

#include <chrono>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

#include "forecast_invariance.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Exactly representable values depending on the rank and the flat index (sums over 4 ranks
// are exact in float).
double value_at(int rank, std::size_t k) {
  return 0.25 * double((k * 7 + 3 * std::size_t(rank)) % 29) - 2.0 * rank;
}

template <class View>
void fill_with(const View& v, const std::function<double(std::size_t)>& f) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t k = 0; k < h.size(); ++k)
    h.data()[k] = static_cast<typename View::value_type>(f(k));
  Kokkos::deep_copy(v, h);
}

template <class View>
double worst_error(const View& v, const std::function<double(std::size_t)>& expected) {
  auto h = to_host(v);
  double worst = 0;
  for (std::size_t k = 0; k < h.size(); ++k)
    worst = std::max(worst, std::abs(double(h.data()[k]) - expected(k)));
  return worst;
}

// Turns the process-wide overlap on for a scope (and off again, also when a check throws).
struct OverlapOn {
  OverlapOn() { dchag::set_fsdp_overlap(true); }
  ~OverlapOn() { dchag::set_fsdp_overlap(false); }
};

dchag::ModelConfig small_config(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 3;  // three blocks: a prefetch and a deferred reduction between every pair
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 7;
  return c;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("non-blocking collectives give the blocking ones' results", C,
                          nonblocking_results) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  const std::size_t n = 6;
  dchag::View2<T, Space> local("local", 2, 3), full("full", 2 * p, 3), sum("sum", 4, 5);
  dchag::View2<T, Space> scattered("scattered", 2, 3), to_scatter("to_scatter", 2 * p, 3);
  fill_with(local, [&](std::size_t k) { return value_at(r, k); });
  fill_with(full, [](std::size_t) { return -1e6; });
  fill_with(sum, [&](std::size_t k) { return value_at(r, k); });
  fill_with(to_scatter, [&](std::size_t k) { return value_at(r, k + 100); });

  // Three collectives in flight at once on one communicator, completed in another order.
  dchag::CommRequest gather = dchag::start_all_gather(space, comm, local, full);
  dchag::CommRequest reduce = dchag::start_all_reduce_sum(space, comm, sum);
  dchag::CommRequest scatter =
      dchag::start_reduce_scatter_sum(space, comm, to_scatter, scattered);
  scatter.wait();
  reduce.wait();
  gather.wait();
  CHECK_FALSE(gather.pending());
  gather.wait();  // a completed request: nothing to do

  CHECK(worst_error(full, [&](std::size_t q) { return value_at(int(q / n), q % n); }) == 0.0);
  CHECK(worst_error(sum, [&](std::size_t k) {
          double s = 0;
          for (int q = 0; q < p; ++q) s += value_at(q, k);
          return s;
        }) == 0.0);
  CHECK(worst_error(scattered, [&](std::size_t k) {
          double s = 0;
          for (int q = 0; q < p; ++q) s += value_at(q, r * n + k + 100);
          return s;
        }) == 0.0);

  // In place: this rank's block of full is its local.
  auto own = Kokkos::subview(full, Kokkos::make_pair(2 * r, 2 * r + 2), Kokkos::ALL);
  fill_with(full, [&](std::size_t q) { return q / n == std::size_t(r) ? value_at(r, q % n) : -1.0; });
  dchag::start_all_gather(space, comm, own, full).wait();
  CHECK(worst_error(full, [&](std::size_t q) { return value_at(int(q / n), q % n); }) == 0.0);
}
TEST_CASE_TEMPLATE_APPLY(nonblocking_results, AllCases);

TEST_CASE("a request dropped before its wait keeps its buffers until MPI is done with them") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size();
  {
    dchag::CommRequest pending;
    {
      // The only handles to these views go out of scope with the collective in flight.
      dchag::View1<double, Space> local("local", 1000), full("full", 1000 * p);
      Kokkos::deep_copy(local, 1.0);
      pending = dchag::start_all_gather(space, comm, local, full);
    }
    // Moving the request on must not complete or duplicate it.
    dchag::CommRequest moved = std::move(pending);
    CHECK_FALSE(pending.pending());
    CHECK(moved.pending() == (p > 1));
  }  // destroyed without wait(): waits for MPI, does not throw
  // Nobody is stuck, and the communicator is usable.
  CHECK(dchag::all_reduce_sum(comm, 1.0) == double(p));
}

TEST_CASE("non-blocking collectives refuse ranks that pass views of different sizes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  if (p == 1) return;
  const int rows = r == p - 1 ? 3 : 2;
  dchag::View2<double, Space> v("v", rows, 3), local("local", rows, 3), full("full", rows * p, 3);
  const char* fragment = "the ranks pass views of different sizes";
  CHECK_THROWS_WITH_AS(dchag::start_all_reduce_sum(space, comm, v), doctest::Contains(fragment),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::start_all_gather(space, comm, local, full),
                       doctest::Contains(fragment), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::start_reduce_scatter_sum(space, comm, full, local),
                       doctest::Contains(fragment), dchag::Error);
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
}

TEST_CASE("CommTimer counts the time a rank waits in collectives, and nothing without MPI") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  dchag::View1<double, Space> v("v", 64), full("full", 64 * p);
  {
    // One rank: no MPI call, no waiting.
    const dchag::Communicator self(MPI_COMM_SELF);
    dchag::View1<double, Space> one("one", 64);
    dchag::CommTimer::reset();
    dchag::all_reduce_sum(space, self, v);
    dchag::all_gather(space, self, v, one);
    dchag::start_all_reduce_sum(space, self, v).wait();
    CHECK(dchag::CommTimer::seconds() == 0.0);
  }
  if (p == 1) return;
  // Rank 0 comes late: every other rank waits about that long, in the blocking all-reduce and
  // in the wait of a non-blocking gather.
  const double late = 0.05;
  for (int nonblocking = 0; nonblocking < 2; ++nonblocking) {
    CAPTURE(nonblocking);
    dchag::CommTimer::reset();
    if (r == 0) std::this_thread::sleep_for(std::chrono::duration<double>(late));
    if (nonblocking) {
      dchag::CommRequest req = dchag::start_all_gather(space, comm, v, full);
      req.wait();
    } else {
      dchag::all_reduce_sum(space, comm, v);
    }
    const double waited = dchag::CommTimer::seconds();
    if (r != 0) CHECK(waited >= 0.8 * late);
    if (r == 0) CHECK(waited < 10.0);  // counted, not wildly wrong
    dchag::CommTimer::reset();
    CHECK(dchag::CommTimer::seconds() == 0.0);
  }
}

TEST_CASE("a sharded unit refuses overlapping calls out of order") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const dchag::Communicator comm;
  dchag::LayerNorm<double, Space> norm("norm", 5);
  auto visit = [&](auto& f) { norm.visit_storage(f); };
  auto list = [&](dchag::ParameterList<double, Space>& l) { norm.parameters(l); };
  dchag::ShardedUnit<double, Space> unit("unit", comm, visit, list);
  unit.start_gather(space);
  CHECK_THROWS_WITH_AS(unit.start_gather(space), doctest::Contains("while a gather is in flight"),
                       dchag::Error);
  unit.gather(space, visit);  // waits for the start
  CHECK(unit.gathered());
  unit.begin_backward(space, visit);
  CHECK_THROWS_WITH_AS(unit.finish_end_backward(space),
                       doctest::Contains("without start_end_backward"), dchag::Error);
  unit.start_end_backward(space, visit);
  CHECK_FALSE(unit.gathered());
  CHECK_THROWS_WITH_AS(unit.begin_backward(space, visit),
                       doctest::Contains("before finish_end_backward"), dchag::Error);
  unit.finish_end_backward(space);
}

TEST_CASE("partition invariance with FSDP overlap: D-CHAG-L") {
  OverlapOn on;
  check_all_grids<dchag::DistributedChannels<dchag::LinearAggregator>>(small_config({4, 1}));
}

TEST_CASE("partition invariance with FSDP overlap: tensor-parallel baseline") {
  OverlapOn on;
  check_all_grids<dchag::TensorParallel>(small_config({1}));
}
