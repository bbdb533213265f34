#ifndef DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP
#define DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP

// What every example program does around its own work: start MPI and Kokkos, track memory,
// pick the policy type from the command line, report errors on every rank, and print each
// rank's peak memory.

#include <dchag/dchag.hpp>
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
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

inline std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoi(item));
  return out;
}

// Handles option `a` when it is one of those the examples share (grid, policy,
// aggregation tree, model sizes, training length); false otherwise. value() takes the option's
// value; Options is the program's own struct with model, train, batch, tp, fsdp, dp, policy,
// aggregator, csv, groups and levels.
template <class Options, class Value>
bool parse_shared_option(const std::string& a, Value&& value, Options& o) {
  if (a == "--policy") o.policy = value();
  else if (a == "--tp") o.tp = std::stoi(value());
  else if (a == "--fsdp") o.fsdp = std::stoi(value());
  else if (a == "--dp") o.dp = std::stoi(value());
  else if (a == "--height") o.model.height = std::stoi(value());
  else if (a == "--width") o.model.width = std::stoi(value());
  else if (a == "--patch") o.model.patch = std::stoi(value());
  else if (a == "--dim") o.model.dim = std::stoi(value());
  else if (a == "--depth") o.model.depth = std::stoi(value());
  else if (a == "--heads") o.model.heads = std::stoi(value());
  else if (a == "--groups") o.groups = std::stoi(value());
  else if (a == "--levels") o.levels = value();
  else if (a == "--aggregator") o.aggregator = value();
  else if (a == "--steps") o.train.steps = std::stoll(value());
  else if (a == "--batch") o.batch = std::stoi(value());
  else if (a == "--lr") o.train.lr = std::stod(value());
  else if (a == "--seed") o.model.seed = std::stoull(value());
  else if (a == "--csv") o.csv = value();
  else return false;
  return true;
}

// The aggregation tree from --groups / --levels / --aggregator baseline, and the checks of the
// shared options.
template <class Options>
void finish_shared_options(const char* program, Options& o) {
  if (o.groups > 0) o.model.levels = {o.groups, 1};
  if (!o.levels.empty()) o.model.levels = parse_list(o.levels);
  if (o.aggregator == "baseline") o.model.levels = {1};
  dchag::Impl::require(o.aggregator == "linear" || o.aggregator == "cross" ||
                           o.aggregator == "baseline",
                       program, ": --aggregator must be linear, cross or baseline, got '",
                       o.aggregator, "'");
  dchag::Impl::require(o.policy == "dchag" || o.policy == "tp", program,
                       ": --policy must be dchag or tp, got '", o.policy, "'");
  dchag::Impl::require(o.batch > 0, program, ": --batch must be positive, got ", o.batch);
}

// The grid of --tp / --fsdp / --dp (--tp defaults to all ranks / (fsdp x dp)); collective.
template <class Options>
dchag::ProcessGrid make_grid(const dchag::Communicator& world, const Options& o) {
  const int tp = o.tp > 0 ? o.tp : std::max(1, world.size() / (o.fsdp * o.dp));
  return dchag::ProcessGrid(world, tp, o.fsdp, o.dp);
}

// This rank's share of the global batch: the fsdp and dp ranks each train on their own part.
inline int local_batch(const char* program, const dchag::ProcessGrid& grid, int batch) {
  dchag::Impl::require(batch % grid.data_size() == 0, program, ": the global batch ", batch,
                       " does not split over dp x fsdp = ", grid.dp(), " x ", grid.fsdp(),
                       " ranks");
  return batch / grid.data_size();
}

// The mean of v[begin, end) (losses over the first and last steps).
inline double mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i) s += v[i];
  return s / double(end - begin);
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
