#ifndef DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP
#define DCHAG_EXAMPLES_EXAMPLE_MAIN_HPP

// What every example program does around its own work: start MPI and Kokkos, track memory,
// check that every rank was given the same command line, read options strictly, pick the
// policy type from the command line, report errors on every rank, watch for stalls, and print
// each rank's peak memory.
//
// How a program ends: status 0, or status 2 with "[rank R] error: <message>" on every rank
// that can still speak. Errors of the configuration are raised on every rank by the library
// (checks are agreed on); failures that can strike one rank alone (files, allocations) are
// wrapped in dchag::on_every_rank where the program meets them. What still escapes on one rank
// only is caught by the frame's end: a rank that failed waits a short while for the others to
// finish too; when they do not (they wait for it inside a collective), it aborts the job rather
// than leave it hanging. A rank that stops (SIGSTOP, a dead node) is caught by the watchdog
// (--timeout-minutes).

#include <dchag/dchag.hpp>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
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

// ---- the watchdog ------------------------------------------------------------------------------

// Turns a stall into an error: armed with a limit, it ends the process with status 2 when
// beat() has not been called for that long (a rank stopped, crashed or hangs, and this one waits
// for it inside a collective that will never complete). Every live rank's watchdog fires within
// about a step of the others; each waits a few seconds after its message before it exits, so
// that the others can print theirs before the MPI launcher tears the job down.
class Watchdog {
 public:
  ~Watchdog() { disarm(); }

  void arm(double seconds, int rank) {
    disarm();
    if (!(seconds > 0)) return;
    limit_ = seconds;
    rank_ = rank;
    beat();
    stop_ = false;
    thread_ = std::thread([this] { watch(); });
  }

  void beat() { last_.store(now()); }

  void disarm() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto tick = std::chrono::duration<double>(std::min(1.0, limit_ / 4));
    while (!wake_.wait_for(lock, tick, [this] { return stop_; })) {
      const double idle = now() - last_.load();
      if (idle < limit_) continue;
      std::fprintf(stderr,
                   "[rank %d] error: no progress for %.1f minutes (--timeout-minutes %g): "
                   "another rank has stopped, crashed or hangs and this one waits for it; "
                   "ending the job\n",
                   rank_, idle / 60, limit_ / 60);
      std::fflush(stderr);
      std::this_thread::sleep_for(std::chrono::seconds(3));
      std::_Exit(2);  // MPI cannot be called from here; the launcher ends the other ranks
    }
  }

  double limit_ = 0;
  int rank_ = 0;
  std::atomic<double> last_{0};
  bool stop_ = true;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
};

inline Watchdog& watchdog() {
  static Watchdog w;
  return w;
}

// ---- the frame ---------------------------------------------------------------------------------

namespace Impl {

inline void report(int rank, const std::string& message) {
  std::fprintf(stderr, "[rank %d] error: %s\n", rank, message.c_str());
  std::fflush(stderr);
}

// Every rank says how it ended, on a communicator of the frame's own (so that this can never be
// matched with a collective the program left unfinished). Returns the exit status. A rank
// that failed gives the others `grace` seconds to arrive; if they do not, they are waiting for
// it inside a collective, and it aborts the job instead of waiting in MPI_Finalize forever.
// Ranks that succeeded while another failed report that rank's error too.
inline int end_together(MPI_Comm frame, int rank, int size, const std::string& error,
                        double grace) {
  const int mine = error.empty() ? size : rank;
  int first = size;
  MPI_Request request;
  MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, frame, &request);
  const auto start = std::chrono::steady_clock::now();
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!error.empty() && waited > grace) {
      report(rank, "the other ranks did not end with this error within " +
                       std::to_string(int(grace)) +
                       " s (they wait for this rank in a collective): aborting the job");
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (first == size) return 0;
  long long length = rank == first ? static_cast<long long>(error.size()) : 0;
  MPI_Bcast(&length, 1, MPI_LONG_LONG, first, frame);
  std::string text = rank == first ? error : std::string();
  text.resize(static_cast<std::size_t>(std::min<long long>(length, INT_MAX)));
  if (!text.empty()) MPI_Bcast(&text[0], static_cast<int>(text.size()), MPI_CHAR, first, frame);
  if (error.empty()) report(rank, "rank " + std::to_string(first) + " failed: " + text);
  return 2;
}

inline std::string command_line(int argc, char* argv[]) {
  std::string s;
  for (int i = 1; i < argc; ++i) s += std::string(i > 1 ? " '" : "'") + argv[i] + "'";
  return s;
}

}  // namespace Impl

// Runs body(world) between MPI/Kokkos start-up and shutdown, with world a dchag::Communicator
// of all ranks; returns the process's exit status (see the top of this file).
template <class Body>
int example_main(int argc, char* argv[], Body&& body) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm frame = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &frame);
  int status = 0;
  std::string error;
  try {
    Kokkos::initialize(argc, argv);
  } catch (const std::exception& e) {
    error = std::string("cannot initialize Kokkos: ") + e.what();
  }
  if (error.empty()) {
    dchag::MemoryTracker::install();
    try {
      const dchag::Communicator world;
      // Ranks given different options would build different models or run different numbers
      // of steps, and meet in mismatched collectives much later.
      dchag::check_agreement(world, "the command line", Impl::command_line(argc, argv));
      status = body(world);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "an exception that is not a std::exception";
    }
    if (!error.empty()) Impl::report(rank, error);
  } else {
    Impl::report(rank, error);
  }
  const int ended = Impl::end_together(frame, rank, size, error, 15.0);
  if (ended != 0) status = ended;
  watchdog().disarm();
  MPI_Comm_free(&frame);
  if (Kokkos::is_initialized()) Kokkos::finalize();
  MPI_Finalize();
  return status;
}

// ---- reading options ---------------------------------------------------------------------------

// The whole text as an integer in [lo, hi]: no trailing characters ("8x"), no silent
// wrap-around ("-1" as an unsigned, "99999999999999999999"); the error names the option.
inline long long parse_integer(const char* program, const std::string& option,
                               const std::string& text, long long lo, long long hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  const bool number = !text.empty() && end == text.c_str() + text.size() &&
                      text.find_first_of(" \t\n") == std::string::npos;
  dchag::Impl::require(number, program, ": ", option, " expects an integer, got '", text, "'");
  const bool overflow = errno == ERANGE;  // v is then LLONG_MIN or LLONG_MAX
  dchag::Impl::require(v >= lo && !(overflow && v < 0), program, ": ", option,
                       " must be at least ", lo, ", got ", text);
  dchag::Impl::require(v <= hi && !(overflow && v > 0), program, ": ", option,
                       " must be at most ", hi, ", got ", text);
  return v;
}

inline int parse_int(const char* program, const std::string& option, const std::string& text,
                     int lo, int hi = INT_MAX) {
  return static_cast<int>(parse_integer(program, option, text, lo, hi));
}

inline std::uint64_t parse_unsigned(const char* program, const std::string& option,
                                    const std::string& text) {
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  dchag::Impl::require(digits, program, ": ", option, " expects a non-negative integer, got '",
                       text, "'");
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  dchag::Impl::require(errno != ERANGE, program, ": ", option, " must be at most ",
                       std::numeric_limits<std::uint64_t>::max(), ", got ", text);
  return v;
}

// A finite number > lo (or >= lo when `inclusive`).
inline double parse_real(const char* program, const std::string& option, const std::string& text,
                         double lo, bool inclusive) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const bool number = !text.empty() && end == text.c_str() + text.size() &&
                      text.find_first_of(" \t\n") == std::string::npos;
  dchag::Impl::require(number, program, ": ", option, " expects a number, got '", text, "'");
  dchag::Impl::require(std::isfinite(v) && errno != ERANGE, program, ": ", option,
                       " must be a finite number, got ", text);
  dchag::Impl::require(inclusive ? v >= lo : v > lo, program, ": ", option, " must be ",
                       inclusive ? "at least " : "greater than ", lo, ", got ", text);
  return v;
}

// "8,2,1": positive integers separated by commas, nothing else.
inline std::vector<int> parse_levels(const char* program, const std::string& option,
                                     const std::string& text) {
  const char* expected = " expects a comma-separated list of positive integers such as 8,2,1";
  dchag::Impl::require(!text.empty(), program, ": ", option, expected, ", got ''");
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    dchag::Impl::require(!item.empty() && item.find_first_not_of("0123456789") == std::string::npos,
                         program, ": ", option, expected, ", got '", text, "'");
    out.push_back(parse_int(program, option, item, 1));
  }
  dchag::Impl::require(text.back() != ',', program, ": ", option, expected, ", got '", text, "'");
  return out;
}

// Handles option `a` when it is one of those the examples share (grid, policy, aggregation
// tree, model sizes, training length, watchdog); false otherwise. value() takes the option's
// value; Options is the program's own struct with model, train, batch, tp, fsdp, dp, policy,
// aggregator, csv, groups, levels, timeout_minutes and given (the options seen).
template <class Options, class Value>
bool parse_shared_option(const char* program, const std::string& a, Value&& value, Options& o) {
  auto positive = [&](int hi = INT_MAX) { return parse_int(program, a, value(), 1, hi); };
  if (a == "--policy") o.policy = value();
  else if (a == "--tp") o.tp = positive();
  else if (a == "--fsdp") o.fsdp = positive();
  else if (a == "--dp") o.dp = positive();
  else if (a == "--height") o.model.height = positive();
  else if (a == "--width") o.model.width = positive();
  else if (a == "--patch") o.model.patch = positive();
  else if (a == "--dim") o.model.dim = positive();
  else if (a == "--depth") o.model.depth = positive();
  else if (a == "--heads") o.model.heads = positive();
  else if (a == "--mlp-ratio") o.model.mlp_ratio = parse_real(program, a, value(), 0.0, false);
  else if (a == "--drop-rate") o.model.drop_rate = parse_real(program, a, value(), 0.0, true);
  else if (a == "--drop-path-rate")
    o.model.drop_path_rate = parse_real(program, a, value(), 0.0, true);
  else if (a == "--groups") o.groups = positive();
  else if (a == "--levels") o.levels = parse_levels(program, a, value());
  else if (a == "--aggregator") o.aggregator = value();
  else if (a == "--steps") o.train.steps = parse_integer(program, a, value(), 1, LLONG_MAX);
  else if (a == "--batch") o.batch = positive(1 << 20);
  else if (a == "--lr") o.train.lr = parse_real(program, a, value(), 0.0, false);
  else if (a == "--seed") o.model.seed = parse_unsigned(program, a, value());
  else if (a == "--csv") o.csv = value();
  else if (a == "--timeout-minutes") o.timeout_minutes = parse_real(program, a, value(), 0.0, true);
  else return false;
  o.given.insert(a);
  return true;
}

// The aggregation tree from --groups / --levels / --aggregator baseline, and the checks of the
// shared options.
template <class Options>
void finish_shared_options(const char* program, Options& o) {
  if (o.groups > 0) o.model.levels = {o.groups, 1};
  if (!o.levels.empty()) o.model.levels = o.levels;
  if (o.aggregator == "baseline") o.model.levels = {1};
  dchag::Impl::require(o.aggregator == "linear" || o.aggregator == "cross" ||
                           o.aggregator == "baseline",
                       program, ": --aggregator must be linear, cross or baseline, got '",
                       o.aggregator, "'");
  dchag::Impl::require(o.policy == "dchag" || o.policy == "tp", program,
                       ": --policy must be dchag or tp, got '", o.policy, "'");
  dchag::Impl::require(o.groups <= 0 || o.levels.empty(), program,
                       ": give --groups or --levels, not both");
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

// The columns of the examples' per-step metrics files.
constexpr const char* metrics_columns =
    "step,loss,lr,grad_norm,seconds,samples_per_second,gflops_per_second,peak_bytes";

// Rank 0 prints step s's progress line and appends it to the metrics file; a failure to write
// the file stops every rank (collective over world).
inline void log_step(const dchag::Communicator& world, const char* program, const char* loss_name,
                     std::int64_t s, std::int64_t steps, const dchag::StepReport& r,
                     std::ofstream& csv, const std::string& csv_path) {
  dchag::on_every_rank(world, [&] {
    if (world.rank() != 0) return;
    std::printf("step %4lld/%lld  %s %.5f  lr %.2e  |g| %7.3f  %6.3f s  %7.1f samples/s  "
                "%6.1f GFLOP/s  peak %.1f MiB\n",
                (long long)s + 1, (long long)steps, loss_name, r.loss, r.lr, r.grad_norm,
                r.seconds, r.samples_per_second, r.gflops_per_second, r.peak_bytes / 1048576.0);
    std::fflush(stdout);
    csv << r.step << ',' << r.loss << ',' << r.lr << ',' << r.grad_norm << ',' << r.seconds << ','
        << r.samples_per_second << ',' << r.gflops_per_second << ',' << r.peak_bytes << '\n';
    csv.flush();
    dchag::Impl::require(bool(csv), program, ": writing the metrics file ", csv_path, " failed (",
                         std::strerror(errno), ")");
  });
}

// ---- checkpoints and the run dir ---------------------------------------------------------------

// Handles the options of a run that saves and resumes (--run-dir, --resume, --save-every,
// --no-save); false otherwise. Options has run_dir, resume, save, save_every and given.
template <class Options, class Value>
bool parse_checkpoint_option(const char* program, const std::string& a, Value&& value,
                             Options& o) {
  if (a == "--run-dir") {
    o.run_dir = value();
    dchag::Impl::require(!o.run_dir.empty(), program, ": --run-dir must not be empty");
  } else if (a == "--resume") {
    o.resume = value();
  } else if (a == "--no-save") {
    o.save = false;
  } else if (a == "--save-every") {
    o.save_every = parse_integer(program, a, value(), 0, LLONG_MAX);
  } else {
    return false;
  }
  o.given.insert(a);
  return true;
}

// Collects the flags of the command line that disagree with what a checkpoint records.
class CheckpointConflicts {
 public:
  explicit CheckpointConflicts(const std::set<std::string>& given) : given_(given) {}

  void check(const char* flag, const std::string& asked, const char* field,
             const std::string& recorded) {
    if (given_.count(flag) && asked != recorded)
      text_ += dchag::Impl::concat(text_.empty() ? "" : "; ", flag, " ", asked,
                                   " conflicts with the checkpoint's ", field, " = ", recorded);
  }
  const std::string& text() const { return text_; }

 private:
  const std::set<std::string>& given_;
  std::string text_;
};

// Evaluating or resuming: the checkpoint `from` defines the model, which must be of `kind`
// (Model::kind()). A model flag given as well must agree with it, or the user would believe a
// model was trained that was not. `channels_flag` is the program's name of the channel count;
// more(conflicts, info) checks and adopts what the program's model adds. Returns the header.
template <class Options, class More>
dchag::CheckpointInfo adopt_checkpoint(const char* program, Options& o, const std::string& from,
                                       const char* kind, const char* channels_flag, More&& more) {
  const dchag::CheckpointInfo info = dchag::read_checkpoint_info(from);
  dchag::Impl::require(info.model == kind, program, ": ", from, " is a checkpoint of a ",
                       info.model, " model; this program trains a ", kind);
  const dchag::ModelConfig& file = info.config;
  const std::string aggregator = info.aggregator == "cross_attention" ? "cross"
                                 : info.aggregator == "linear"        ? "linear"
                                                                      : "baseline";
  CheckpointConflicts conflicts(o.given);
  using std::to_string;
  const dchag::ModelConfig& m = o.model;
  conflicts.check(channels_flag, to_string(m.channels), "channels", to_string(file.channels));
  conflicts.check("--height", to_string(m.height), "height", to_string(file.height));
  conflicts.check("--width", to_string(m.width), "width", to_string(file.width));
  conflicts.check("--patch", to_string(m.patch), "patch", to_string(file.patch));
  conflicts.check("--dim", to_string(m.dim), "dim", to_string(file.dim));
  conflicts.check("--depth", to_string(m.depth), "depth", to_string(file.depth));
  conflicts.check("--heads", to_string(m.heads), "heads", to_string(file.heads));
  conflicts.check("--mlp-ratio", dchag::Impl::round_trip_text(m.mlp_ratio), "mlp_ratio",
                  dchag::Impl::round_trip_text(file.mlp_ratio));
  conflicts.check("--seed", to_string(m.seed), "seed", to_string(file.seed));
  conflicts.check("--aggregator", o.aggregator, "aggregator", aggregator);
  for (const char* flag : {"--groups", "--levels"})
    conflicts.check(flag, m.levels_string(), "levels", file.levels_string());
  more(conflicts, info);
  dchag::Impl::require(conflicts.text().empty(), program, ": ", conflicts.text(), " (", from,
                       "); the checkpoint defines the model: drop the flag, or start a new run");
  // Dropout shapes the run, not the model: flags given now override what the file recorded.
  const double drop_rate = o.model.drop_rate, drop_path_rate = o.model.drop_path_rate;
  o.model = file;
  if (o.given.count("--drop-rate")) o.model.drop_rate = drop_rate;
  if (o.given.count("--drop-path-rate")) o.model.drop_path_rate = drop_path_rate;
  o.aggregator = aggregator;
  return info;
}

// Rank 0's metrics file. A resumed run keeps the rows of the steps before `start` and appends
// from there (the rows a stopped run wrote past its last checkpoint are dropped: they will be
// trained again); a new run starts the file.
inline void open_metrics(const char* program, std::ofstream& csv, const std::string& path,
                         std::int64_t start) {
  std::vector<std::string> kept;
  if (start > 0) {
    std::ifstream old(path);
    std::string line;
    while (std::getline(old, line)) {
      if (line == metrics_columns) continue;
      char* end = nullptr;
      const long long step = std::strtoll(line.c_str(), &end, 10);
      if (end != line.c_str() && *end == ',' && step < start) kept.push_back(line);
    }
  }
  csv.open(path, std::ios::trunc);
  dchag::Impl::require(bool(csv), program, ": cannot write the metrics file ", path, " (",
                       std::strerror(errno), ")");
  csv << metrics_columns << '\n';
  for (const auto& line : kept) csv << line << '\n';
  csv.flush();
  dchag::Impl::require(bool(csv), program, ": writing the metrics file ", path, " failed (",
                       std::strerror(errno), ")");
}

// The run dir (made, and cleared of the temporaries of saves that were killed) and the metrics
// file are rank 0's alone: a failure there must stop every rank (collective over world).
inline void prepare_run_dir(const dchag::Communicator& world, const char* program,
                            const std::string& run_dir, std::ofstream& csv,
                            const std::string& csv_path, std::int64_t start) {
  dchag::on_every_rank(world, [&] {
    if (world.rank() != 0) return;
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    dchag::Impl::require(!ec, program, ": cannot create the run dir '", run_dir, "' (",
                         ec.message(), ")");
    for (const auto& stale : dchag::remove_stale_temporaries(run_dir))
      std::printf("removed %s (left by a run that was stopped while saving)\n", stale.c_str());
    open_metrics(program, csv, csv_path, start);
  });
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
