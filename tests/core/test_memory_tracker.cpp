#include <dchag/core/memory_tracker.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;
using dchag::MemoryTracker;

namespace {

std::uint64_t foreign_allocations = 0, foreign_deallocations = 0;

void foreign_allocate(const Kokkos::Tools::SpaceHandle, const char*, const void*,
                      const std::uint64_t) {
  ++foreign_allocations;
}
void foreign_deallocate(const Kokkos::Tools::SpaceHandle, const char*, const void*,
                        const std::uint64_t) {
  ++foreign_deallocations;
}

// Leaves the tracker inactive with the given callbacks in its slots, as if some other tool (or
// nothing) were there before install().
void set_foreign_callbacks(Kokkos::Tools::allocateDataFunction a,
                           Kokkos::Tools::deallocateDataFunction d) {
  Kokkos::Tools::Experimental::set_allocate_data_callback(a);
  Kokkos::Tools::Experimental::set_deallocate_data_callback(d);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("MemoryTracker: current and peak bytes per memory space", C, tracker) {
  using Space = typename C::space;
  using T = typename C::scalar;
  MemoryTracker::install();
  MemoryTracker::install();  // idempotent
  REQUIRE(MemoryTracker::active());
  const std::string name = dchag::MemorySpace<Space>::name();
  const std::uint64_t before = MemoryTracker::current_bytes(name);
  const std::uint64_t total_before = MemoryTracker::current_total_bytes();
  const std::size_t n = std::size_t(1) << 20;
  const std::uint64_t bytes = n * sizeof(T);
  {
    dchag::View2<T, Space> v("tracked", n / 64, 64);
    CHECK(MemoryTracker::current_bytes(name) >= before + bytes);
    CHECK(MemoryTracker::peak_bytes(name) >= before + bytes);
    CHECK(MemoryTracker::current_total_bytes() >= total_before + bytes);
    const auto snap = MemoryTracker::snapshot();
    REQUIRE(snap.count(name) == 1);
    CHECK(snap.at(name).current_bytes >= before + bytes);
    CHECK(snap.at(name).live_allocations >= 1);
  }
  // Freed: current back where it was, the peak remembers.
  CHECK(MemoryTracker::current_bytes(name) == before);
  CHECK(MemoryTracker::current_total_bytes() == total_before);
  CHECK(MemoryTracker::peak_bytes(name) >= before + bytes);
  CHECK(MemoryTracker::peak_total_bytes() >= total_before + bytes);

  MemoryTracker::reset_peak();
  CHECK(MemoryTracker::peak_bytes(name) == MemoryTracker::current_bytes(name));
  CHECK(MemoryTracker::peak_total_bytes() == MemoryTracker::current_total_bytes());
  {
    dchag::View1<T, Space> small("small", n / 4);
    dchag::View1<T, Space> tiny("tiny", 3);  // 12 or 24 bytes, reported rounded up to 8
    CHECK(MemoryTracker::current_bytes(name) >= before + bytes / 4 + 3 * sizeof(T));
  }
  CHECK(MemoryTracker::peak_bytes(name) >= before + bytes / 4);
  CHECK(MemoryTracker::peak_bytes(name) < before + bytes);  // the window after reset_peak only
  CHECK(MemoryTracker::current_bytes("NoSuchSpace") == 0);
}
TEST_CASE_TEMPLATE_APPLY(tracker, AllCases);

TEST_CASE_TEMPLATE_DEFINE("MemoryTracker: allocation_count counts every allocation, freed or not",
                          C, tracker_count) {
  using Space = typename C::space;
  using T = typename C::scalar;
  MemoryTracker::install();
  const std::string name = dchag::MemorySpace<Space>::name();
  const std::uint64_t before = MemoryTracker::allocation_count();
  const std::uint64_t space_before = MemoryTracker::usage(name).allocations;
  for (int i = 0; i < 3; ++i) dchag::View1<T, Space> v("counted", 100);
  CHECK(MemoryTracker::allocation_count() == before + 3);
  CHECK(MemoryTracker::usage(name).allocations == space_before + 3);
  // Copies and unmanaged views of existing memory allocate nothing.
  dchag::View1<T, Space> a("counted", 10);
  const auto copy = a;
  dchag::Unmanaged<T*, Space> view(a.data(), a.size());
  CHECK(MemoryTracker::allocation_count() == before + 4);
  CHECK(copy.data() == view.data());
}
TEST_CASE_TEMPLATE_APPLY(tracker_count, AllCases);

TEST_CASE("MemoryTracker: views from before install() are ignored when freed") {
  set_foreign_callbacks(nullptr, nullptr);
  CHECK(!MemoryTracker::active());
  auto early = std::make_unique<Kokkos::View<double*, Kokkos::HostSpace>>("early", 1000);
  MemoryTracker::install();  // restarts the counts
  CHECK(MemoryTracker::current_bytes("Host") == 0);
  Kokkos::View<double*, Kokkos::HostSpace> late("late", 10);
  early.reset();
  CHECK(MemoryTracker::current_bytes("Host") == 80);  // not 80 - 8000, wrapped around
  CHECK(MemoryTracker::usage("Host").live_allocations == 1);
}

TEST_CASE("MemoryTracker: callbacks set before install() keep receiving events") {
  set_foreign_callbacks(&foreign_allocate, &foreign_deallocate);
  MemoryTracker::install();
  foreign_allocations = foreign_deallocations = 0;
  {
    Kokkos::View<float*, Kokkos::HostSpace> v("chained", 100);
    CHECK(MemoryTracker::current_bytes("Host") >= 400);
  }
  CHECK(foreign_allocations == 1);
  CHECK(foreign_deallocations == 1);
  // Leave a tracker that chains to nothing for the tests that follow.
  set_foreign_callbacks(nullptr, nullptr);
  MemoryTracker::install();
  REQUIRE(MemoryTracker::active());
}

TEST_CASE("MemoryTracker: concurrent allocations are counted exactly") {
  MemoryTracker::install();
  // Our callbacks are driven directly: whether Kokkos itself may allocate from several host
  // threads at once depends on the backend, but OpenMP code may, and the counts must hold.
  Kokkos::Tools::SpaceHandle handle{};
  std::strcpy(handle.name, "TestThreads");
  const int threads = 4, per_thread = 5000;
  std::vector<char> addresses(threads * per_thread);
  auto work = [&](int t) {
    for (int i = 0; i < per_thread; ++i) {
      const void* p = &addresses[t * per_thread + i];
      dchag::Impl::memory_tracker_on_allocate(handle, "x", p, 16);
      if (i % 2 == 0) dchag::Impl::memory_tracker_on_deallocate(handle, "x", p, 16);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
  for (auto& th : pool) th.join();
  const auto u = MemoryTracker::usage("TestThreads");
  CHECK(u.current_bytes == std::uint64_t(threads) * per_thread / 2 * 16);
  CHECK(u.live_allocations == std::uint64_t(threads) * per_thread / 2);
  for (int i = 0; i < threads * per_thread; ++i)
    if (i % per_thread % 2 == 1)
      dchag::Impl::memory_tracker_on_deallocate(handle, "x", &addresses[i], 16);
  CHECK(MemoryTracker::current_bytes("TestThreads") == 0);
}

TEST_CASE("MemoryTracker: resident set size") {
#if defined(__linux__)
  const std::uint64_t rss0 = MemoryTracker::current_rss_bytes();
  CHECK(rss0 > 0);
  CHECK(MemoryTracker::peak_rss_bytes() >= rss0);
  const std::size_t bytes = std::size_t(64) << 20;
  Kokkos::View<char*, Kokkos::HostSpace> v("touched", bytes);  // zero-filled: every page touched
  const std::uint64_t rss1 = MemoryTracker::current_rss_bytes();
  CHECK(rss1 >= rss0 + bytes * 3 / 4);
  CHECK(MemoryTracker::peak_rss_bytes() >= rss1 - (std::uint64_t(1) << 20));  // lazy counters
#else
  MESSAGE("RSS is only measured on Linux");
#endif
}
