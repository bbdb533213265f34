#ifndef DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP
#define DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP

// What every example program does around its own work: start MPI and Kokkos, track memory,
// pick the policy type from the command line, report errors on every rank, and print each
// rank's peak memory.

#include <dchag/dchag.hpp>
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

namespace dchag_example {

template <class Policy>
struct PolicyTag {
  using type = Policy;
};

// Calls run(PolicyTag<Policy>{}) for --policy dchag|tp and --aggregator linear|cross.
template <class Run>
int with_policy(const std::string& policy, const std::string& aggregator, Run&& run) {
  using namespace dchag;
  if (policy == "tp")
    return aggregator == "cross" ? run(PolicyTag<ReplicatedChannels<CrossAttentionAggregator>>{})
                                 : run(PolicyTag<ReplicatedChannels<LinearAggregator>>{});
  return aggregator == "cross" ? run(PolicyTag<DistributedChannels<CrossAttentionAggregator>>{})
                               : run(PolicyTag<DistributedChannels<LinearAggregator>>{});
}

// Runs body() between MPI/Kokkos start-up and shutdown. A dchag::Error is raised on every
// rank (configuration errors are agreed on), so each rank reports it and exits with status 2.
template <class Body>
int example_main(int argc, char* argv[], Body&& body) {
  MPI_Init(&argc, &argv);
  int status = 0;
  Kokkos::initialize(argc, argv);
  dchag::MemoryTracker::install();
  try {
    status = body();
  } catch (const dchag::Error& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    status = 2;
  }
  Kokkos::finalize();
  MPI_Finalize();
  return status;
}

// Every rank's peak Kokkos memory and peak RSS, printed by rank 0 (collective over world).
inline void print_peak_memory(const dchag::Communicator& world) {
  const double mine[2] = {double(dchag::MemoryTracker::peak_total_bytes()),
                          double(dchag::MemoryTracker::peak_rss_bytes())};
  std::vector<double> peaks(2 * world.size());
  MPI_Gather(mine, 2, MPI_DOUBLE, peaks.data(), 2, MPI_DOUBLE, 0, world.get());
  if (world.rank() != 0) return;
  for (int r = 0; r < world.size(); ++r)
    std::printf("  rank %d: peak Kokkos memory %.1f MiB, peak RSS %.1f MiB\n", r,
                peaks[2 * r] / 1048576.0, peaks[2 * r + 1] / 1048576.0);
}

}  // namespace dchag_example

#endif
