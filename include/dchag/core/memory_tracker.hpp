#ifndef DCHAG_CORE_MEMORY_TRACKER_HPP
#define DCHAG_CORE_MEMORY_TRACKER_HPP

// Bytes live in Kokkos allocations, per memory space, current and peak; plus the process's
// resident set size. This is how benchmarks report "memory per rank".
//
// The counts come from Kokkos Tools' allocate/deallocate callbacks, which Kokkos invokes for
// every View allocation in every memory space (and its own internal ones, e.g. scratch). Since
// Kokkos 3.x, setting a callback is enough to have it called; no tool library has to be loaded
// (Kokkos reports "a profiling library is loaded" as soon as any callback is set).
//
// Kokkos reports the allocation's logical size (for Views: the span in bytes, rounded up to a
// multiple of 8; the reference-count header is not counted). Kokkos 3.4 reports a zero-length
// View as its 128-byte header instead; these bytes are counted as reported.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace dchag {

struct MemoryUsage {
  std::uint64_t current_bytes = 0;
  std::uint64_t peak_bytes = 0;
  std::uint64_t live_allocations = 0;
  // Allocations made since install(), freed or not: a training step that is meant to reuse its
  // buffers shows up here as a count that stops growing.
  std::uint64_t allocations = 0;
};

namespace Impl {

struct MemoryTrackerState {
  std::mutex mutex;
  std::map<std::string, MemoryUsage> spaces;
  MemoryUsage total;  // its peak is the peak of the sum, not the sum of the peaks
  struct Allocation {
    MemoryUsage* space;  // a node of `spaces`: stable, and both are only cleared together
    std::uint64_t bytes;
  };
  // Deallocations are matched to the allocations we saw, so that freeing a View allocated before
  // install() cannot drive a count negative.
  std::unordered_map<const void*, Allocation> live;
  Kokkos::Tools::Experimental::EventSet chained{};
};

// Never destroyed: Views released during static destruction (after main) still call back here.
inline MemoryTrackerState& memory_tracker_state() {
  static MemoryTrackerState* state = new MemoryTrackerState();
  return *state;
}

inline void memory_tracker_on_allocate(const Kokkos::Tools::SpaceHandle handle, const char* label,
                                       const void* ptr, const std::uint64_t size) {
  auto& s = memory_tracker_state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto& u = s.spaces[handle.name];
    u.current_bytes += size;
    u.live_allocations += 1;
    u.allocations += 1;
    if (u.current_bytes > u.peak_bytes) u.peak_bytes = u.current_bytes;
    s.total.current_bytes += size;
    s.total.live_allocations += 1;
    s.total.allocations += 1;
    if (s.total.current_bytes > s.total.peak_bytes) s.total.peak_bytes = s.total.current_bytes;
    s.live[ptr] = {&u, size};
  }
  if (s.chained.allocate_data) s.chained.allocate_data(handle, label, ptr, size);
}

inline void memory_tracker_on_deallocate(const Kokkos::Tools::SpaceHandle handle,
                                         const char* label, const void* ptr,
                                         const std::uint64_t size) {
  auto& s = memory_tracker_state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.live.find(ptr);
    if (it != s.live.end()) {
      // The bytes recorded at allocation, in case a Kokkos version reports another size here.
      auto& u = *it->second.space;
      u.current_bytes -= it->second.bytes;
      u.live_allocations -= 1;
      s.total.current_bytes -= it->second.bytes;
      s.total.live_allocations -= 1;
      s.live.erase(it);
    }
  }
  if (s.chained.deallocate_data) s.chained.deallocate_data(handle, label, ptr, size);
}

}  // namespace Impl

// Process-wide (all members static): Kokkos Tools callbacks are process-wide too.
class MemoryTracker {
 public:
  // Starts counting. Call it after Kokkos::initialize: loading a tool library (KOKKOS_TOOLS_LIBS
  // / KOKKOS_PROFILE_LIBRARY) there overwrites both slots, with nullptr where the tool has no
  // memory hooks. Idempotent while active; if the callbacks were replaced or cleared since
  // (a tool's finalize hook makes Kokkos::finalize pause all callbacks), calling it again
  // reinstalls them and restarts the counts from zero.
  //
  // The allocate/deallocate callbacks are process-wide slots. Callbacks already set (e.g. by a
  // tool loaded through KOKKOS_TOOLS_LIBS) are chained: they still see every event. But a tool
  // or code that sets these callbacks *after* install() replaces ours, and counting stops.
  // Other callback slots (kernels, regions, fences) are left untouched.
  static void install() {
    namespace KTE = Kokkos::Tools::Experimental;
    auto& s = Impl::memory_tracker_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (active()) return;
    const auto current = KTE::get_callbacks();
    s.chained = KTE::EventSet{};
    if (current.allocate_data != &Impl::memory_tracker_on_allocate)
      s.chained.allocate_data = current.allocate_data;
    if (current.deallocate_data != &Impl::memory_tracker_on_deallocate)
      s.chained.deallocate_data = current.deallocate_data;
    s.spaces.clear();
    s.total = MemoryUsage{};
    s.live.clear();
    KTE::set_allocate_data_callback(&Impl::memory_tracker_on_allocate);
    KTE::set_deallocate_data_callback(&Impl::memory_tracker_on_deallocate);
  }

  // Whether our callbacks are the ones Kokkos calls now.
  static bool active() {
    const auto current = Kokkos::Tools::Experimental::get_callbacks();
    return current.allocate_data == &Impl::memory_tracker_on_allocate &&
           current.deallocate_data == &Impl::memory_tracker_on_deallocate;
  }

  // Space names are Kokkos's: MemorySpace::name(), e.g. "Host", "Cuda", "CudaUVM", "HIP".
  // A space never allocated in reads 0.
  static std::uint64_t current_bytes(const std::string& space) {
    return usage(space).current_bytes;
  }
  static std::uint64_t peak_bytes(const std::string& space) { return usage(space).peak_bytes; }
  static MemoryUsage usage(const std::string& space) {
    auto& s = Impl::memory_tracker_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.spaces.find(space);
    return it == s.spaces.end() ? MemoryUsage{} : it->second;
  }

  // Over all spaces together.
  static std::uint64_t current_total_bytes() { return total().current_bytes; }
  static std::uint64_t peak_total_bytes() { return total().peak_bytes; }
  // Allocations in every space since install() (0 while not installed): the difference over a
  // training step is how many Views the step allocated.
  static std::uint64_t allocation_count() { return total().allocations; }
  static MemoryUsage total() {
    auto& s = Impl::memory_tracker_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    return s.total;
  }

  // Every space that has allocated since install(), by name.
  static std::map<std::string, MemoryUsage> snapshot() {
    auto& s = Impl::memory_tracker_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    return s.spaces;
  }

  // Starts a new measurement window: every peak becomes the current value.
  static void reset_peak() {
    auto& s = Impl::memory_tracker_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    for (auto& kv : s.spaces) kv.second.peak_bytes = kv.second.current_bytes;
    s.total.peak_bytes = s.total.current_bytes;
  }

  // Highest resident set size of the process so far (getrusage); 0 where unavailable. Covers
  // everything, not only Kokkos: MPI buffers, OpenBLAS workspaces, the binary itself.
  // Linux updates ru_maxrss lazily (per-thread RSS counters are folded in every few dozen page
  // faults), so it can trail /proc/self/statm by a few hundred KiB: never report less than that.
  static std::uint64_t peak_rss_bytes() {
#if defined(__unix__) || defined(__APPLE__)
    struct rusage usage {};
    if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
#if defined(__APPLE__)
    return static_cast<std::uint64_t>(usage.ru_maxrss);  // bytes on macOS
#else
    const std::uint64_t peak = static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;  // KiB
    const std::uint64_t now = current_rss_bytes();
    return peak > now ? peak : now;
#endif
#else
    return 0;
#endif
  }

  // Resident set size now (/proc/self/statm); 0 where there is no /proc.
  static std::uint64_t current_rss_bytes() {
#if defined(__linux__)
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size_pages = 0, resident_pages = 0;
    const int read = std::fscanf(f, "%llu %llu", &size_pages, &resident_pages);
    std::fclose(f);
    const long page = sysconf(_SC_PAGESIZE);
    if (read != 2 || page <= 0) return 0;
    return static_cast<std::uint64_t>(resident_pages) * static_cast<std::uint64_t>(page);
#else
    return 0;
#endif
  }
};

}  // namespace dchag

#endif
