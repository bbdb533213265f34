#ifndef DCHAG_PARALLEL_COLLECTIVES_HPP
#define DCHAG_PARALLEL_COLLECTIVES_HPP

// Collectives on Kokkos views.
//
// Every function takes the execution-space instance first and fences it before MPI touches the
// buffer (the kernels producing it may still be running). Views may have any rank but must be
// contiguous, and hold float, double, bf16 or fp16. MPI gets the view's own memory when the host can access
// it, or when the library is built with DCHAG_GPU_AWARE_MPI (device pointers go to MPI as they
// are); otherwise the data is staged through a host copy. On a communicator of one rank nothing
// is copied and MPI is not called (all_gather / reduce_scatter copy local <-> full when these
// are different buffers, on the device).
//
// All ranks of `comm` must call the same collectives in the same order with the same shapes.
// The shape checks below are local and identical on every rank of a consistent program; the
// element counts are also compared between ranks (one 16-byte all-reduce per call), because MPI
// trusts them: a rank passing another count would read or write past the others' buffers.
//
// dchag::CommStats counts the payload bytes each rank sends, as the bandwidth-optimal ring
// algorithms send them, with n the bytes of the view (for all_gather / reduce_scatter, n_full
// the bytes of the full view) and p the communicator size:
//   all_reduce_*     2 (p - 1) / p * n
//   all_gather       (p - 1) / p * n_full = (p - 1) * n_local
//   all_gatherv      n_full - n_local     (what this rank receives; summed over the ranks the
//                                          ring's total, (p - 1) * n_full)
//   reduce_scatter   (p - 1) / p * n_full = (p - 1) * n_local
//   broadcast        (p - 1) / p * n      (pipelined: every rank but the last forwards n;
//                                          the average over ranks)
// rounded down per call; 0 when p = 1. It is a model of the traffic, not a measurement: MPI may
// choose other algorithms, but these are the numbers the paper's comparison is made in.
//
// dchag::CommTimer measures what the traffic costs this rank: the seconds spent inside blocking
// MPI calls of this header (the count checks included) and inside CommRequest::wait(), that is
// the time the rank could not compute because it waited for the others or for the network.
//
// 16-bit views (bf16, fp16; core/low_precision.hpp) travel as MPI_UINT16_T where nothing is
// computed (gathers, broadcasts): the bits arrive as they left. Reductions of them (sums, max)
// are taken in float instead: the view is widened into a float buffer in its own memory space,
// reduced as float, and rounded back once. MPI's own reduction of a 16-bit type (or a custom
// operator on MPI_UINT16_T) would round every partial sum of the reduction tree to 16 bits: over
// p ranks a bf16 sum loses low bits at each of its log2(p) to p - 1 steps, and how many depends
// on the algorithm MPI picks, so the result would not even be reproducible between MPI libraries.
// The price is float traffic (twice the 16-bit payload, and CommStats counts the float bytes)
// and two conversion kernels.
//
// Non-blocking variants (start_all_gather, start_reduce_scatter_sum, start_all_reduce_sum) issue
// the MPI-3 collective (MPI_Iallgather, MPI_Ireduce_scatter_block, MPI_Iallreduce) and return a
// dchag::CommRequest; the result is in the views only after its wait(). Between the start and
// the wait the views must not be touched (neither read nor written) and every rank must start
// the same non-blocking collectives on a communicator in the same order, as for the blocking
// ones. Whether the transfer actually progresses while the rank computes depends on the MPI
// library (a progress thread, or hardware offload); without one it mostly happens in wait().

#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/low_precision.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {

// Process-wide counter of the bytes this rank sent through the collectives of this header.
class CommStats {
 public:
  static std::uint64_t bytes() { return counters().bytes.load(); }
  // Number of collective calls counted (on communicators of any size, scalar helpers included).
  static std::uint64_t calls() { return counters().calls.load(); }
  static void reset() {
    counters().bytes.store(0);
    counters().calls.store(0);
  }
  static void add(std::uint64_t sent_bytes) {
    counters().bytes.fetch_add(sent_bytes);
    counters().calls.fetch_add(1);
  }

 private:
  struct Counters {
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> calls{0};
  };
  // A function-local static in an inline function: one counter per process, however many
  // translation units include this header.
  static Counters& counters() {
    static Counters c;
    return c;
  }
};

// Process-wide time this rank spent blocked in the collectives of this header (see the top of
// the file). Resettable, e.g. once per training step.
class CommTimer {
 public:
  static double seconds() { return 1e-9 * double(nanoseconds().load()); }
  static void reset() { nanoseconds().store(0); }
  static void add(double s) {
    if (s > 0) nanoseconds().fetch_add(static_cast<std::uint64_t>(s * 1e9));
  }

 private:
  static std::atomic<std::uint64_t>& nanoseconds() {
    static std::atomic<std::uint64_t> ns{0};
    return ns;
  }
};

namespace Impl {

// Adds the lifetime of the scope to CommTimer (the scope of one blocking MPI call or wait).
class WaitClock {
 public:
  WaitClock() : start_(std::chrono::steady_clock::now()) {}
  WaitClock(const WaitClock&) = delete;
  WaitClock& operator=(const WaitClock&) = delete;
  ~WaitClock() {
    CommTimer::add(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace Impl

// A non-blocking collective in flight (or none: default-constructed, or after wait()).
// It owns what MPI works on until completion: the views (and, where the data is staged through
// the host, the host copies) are held by the request, so they outlive MPI's use of them even if
// the caller drops its own handles. wait() completes the collective, copies staged results back
// and throws dchag::Error if MPI reports an error. A request destroyed before wait() (an
// exception on the way) still waits for MPI to finish with the buffers, without copying the
// result back and without throwing: MPI forbids freeing the request of a collective in flight,
// and releasing the memory under it would let MPI write into freed memory. (As for any
// collective, that wait returns once every rank has started the collective.)
class CommRequest {
 public:
  CommRequest() = default;
  CommRequest(MPI_Request request, const char* where, std::function<void()> finish)
      : request_(request), where_(where), finish_(std::move(finish)) {}
  // A completed request whose finish() runs at wait() (a communicator of one rank: no MPI).
  CommRequest(const char* where, std::function<void()> finish)
      : where_(where), finish_(std::move(finish)) {}

  CommRequest(const CommRequest&) = delete;
  CommRequest& operator=(const CommRequest&) = delete;
  CommRequest(CommRequest&& o) noexcept
      : request_(o.request_), where_(o.where_), finish_(std::move(o.finish_)) {
    o.request_ = MPI_REQUEST_NULL;
    o.finish_ = nullptr;
  }
  CommRequest& operator=(CommRequest&& o) noexcept {
    if (this != &o) {
      abandon();
      request_ = o.request_;
      where_ = o.where_;
      finish_ = std::move(o.finish_);
      o.request_ = MPI_REQUEST_NULL;
      o.finish_ = nullptr;
    }
    return *this;
  }
  ~CommRequest() { abandon(); }

  // Whether wait() has work left (MPI in flight or a result to copy back).
  bool pending() const { return request_ != MPI_REQUEST_NULL || bool(finish_); }

  // Completes the collective; the result is in the views on return. No-op when not pending.
  void wait() {
    if (request_ != MPI_REQUEST_NULL) {
      int rc = MPI_SUCCESS;
      {
        Impl::WaitClock clock;
        rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
      }
      request_ = MPI_REQUEST_NULL;  // MPI_Wait set it so; also if it failed, never wait again
      if (rc != MPI_SUCCESS) finish_ = nullptr;  // the buffers go with the request
      Impl::check_mpi(rc, "MPI_Wait", where_);
    }
    if (finish_) {
      auto finish = std::move(finish_);
      finish_ = nullptr;
      finish();
    }
  }

 private:
  // Local completion without result (see the class comment); never throws.
  void abandon() noexcept {
    if (request_ != MPI_REQUEST_NULL) {
      Impl::WaitClock clock;
      MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }
    request_ = MPI_REQUEST_NULL;
    finish_ = nullptr;  // releases the views and host copies after MPI is done with them
  }

  MPI_Request request_ = MPI_REQUEST_NULL;
  const char* where_ = "CommRequest";
  std::function<void()> finish_;  // copies staged results back; holds the buffers
};

namespace Impl {

// One blocking MPI call, its duration counted by CommTimer.
template <class Call>
int timed_mpi(Call&& call) {
  WaitClock clock;
  return call();
}

template <class T>
struct always_false : std::false_type {};

template <class T>
struct MpiType {
  static_assert(always_false<T>::value,
                "dchag collectives take views of float, double, bf16 or fp16");
};
template <>
struct MpiType<float> {
  static MPI_Datatype get() { return MPI_FLOAT; }
};
template <>
struct MpiType<double> {
  static MPI_Datatype get() { return MPI_DOUBLE; }
};
// Bits only: never an MPI reduction (see the top of the file).
template <>
struct MpiType<bf16> {
  static MPI_Datatype get() { return MPI_UINT16_T; }
};
template <>
struct MpiType<fp16> {
  static MPI_Datatype get() { return MPI_UINT16_T; }
};

template <class View>
constexpr bool low_precision_view() {
  return is_low_precision_v<typename View::non_const_value_type>;
}

template <class View>
using WideView = Kokkos::View<float*, typename View::memory_space>;

// A float copy of a contiguous 16-bit view, in its memory space (exact: every bf16 and fp16 is a
// float); only allocated when not `copy_in`. The kernels are functors: they run inside other
// templates' member functions on device backends.
template <class Src, class Dst>
struct WidenElements {
  Src src;
  Dst dst;
  KOKKOS_INLINE_FUNCTION void operator()(std::int64_t i) const { dst(i) = float(src(i)); }
};
template <class Src, class Dst>
struct NarrowElements {
  Src src;
  Dst dst;
  KOKKOS_INLINE_FUNCTION void operator()(std::int64_t i) const {
    dst(i) = typename Dst::non_const_value_type(src(i));
  }
};

template <class ExecSpace, class View>
WideView<View> widen(const ExecSpace& space, const View& v, bool copy_in) {
  WideView<View> wide(Kokkos::view_alloc(Kokkos::WithoutInitializing, "dchag::wide_reduction"),
                      v.size());
  if (copy_in && v.size() > 0) {
    const auto src = flat(v);
    Kokkos::parallel_for("dchag::widen",
                         Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(
                             space, 0, static_cast<std::int64_t>(v.size())),
                         WidenElements<decltype(src), WideView<View>>{src, wide});
  }
  return wide;
}

// v <- wide, rounded to nearest even: the one rounding of a 16-bit reduction.
template <class ExecSpace, class View>
void narrow(const ExecSpace& space, const WideView<View>& wide, const View& v) {
  if (v.size() == 0) return;
  const auto dst = flat(v);
  Kokkos::parallel_for("dchag::narrow",
                       Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(
                           space, 0, static_cast<std::int64_t>(v.size())),
                       NarrowElements<WideView<View>, decltype(dst)>{wide, dst});
  space.fence();  // complete on return, as the other results are
}

// Can MPI read and write memory of this space directly?
template <class MemorySpace>
constexpr bool mpi_accessible() {
#if defined(DCHAG_GPU_AWARE_MPI)
  return true;
#else
  return Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemorySpace>::accessible;
#endif
}

// The array MPI works on for `v`: `v` itself where MPI can access its memory, otherwise a host
// copy (filled from `v` when `copy_in`; a receive-only buffer needs no copy).
template <class ExecSpace, class View>
auto mpi_buffer(const ExecSpace& space, const View& v, bool copy_in) {
  using Memory = typename View::memory_space;
  if constexpr (mpi_accessible<Memory>()) {
    (void)space;
    (void)copy_in;
    return flat(v);
  } else {
    // Non-const even for a const send view, so that the host copy can be filled.
    Kokkos::View<typename View::non_const_value_type*, Kokkos::HostSpace> host(
        Kokkos::view_alloc(Kokkos::WithoutInitializing, "dchag::mpi_staging"), v.size());
    if (copy_in) {
      Kokkos::deep_copy(space, host, flat(v));
      space.fence();  // MPI reads the host copy next
    }
    return host;
  }
}

// After MPI wrote `buffer`: bring the result into `v` if `buffer` was a host copy.
template <class ExecSpace, class View, class Buffer>
void mpi_copy_out(const ExecSpace& space, const View& v, const Buffer& buffer) {
  if constexpr (!mpi_accessible<typename View::memory_space>()) {
    Kokkos::deep_copy(space, flat(v), buffer);
    space.fence();  // the host copy is freed on return
  } else {
    (void)space;
    (void)v;
    (void)buffer;
  }
}

template <class ExecSpace, class View>
void check_view(const char* where, const View& v) {
  static_assert(Kokkos::is_view<View>::value, "dchag collectives take Kokkos views");
  static_assert(Kokkos::is_execution_space<ExecSpace>::value,
                "dchag collectives take an execution-space instance first");
  static_assert(
      Kokkos::SpaceAccessibility<ExecSpace, typename View::memory_space>::accessible,
      "dchag collectives: the execution space cannot access the view's memory");
  (void)sizeof(MpiType<typename View::non_const_value_type>);  // float, double, bf16, fp16
  require(v.span_is_contiguous(), "dchag::", where, ": view ", shape_of(v),
          " is not contiguous (take a contiguous copy first)");
  require(v.size() <= static_cast<std::size_t>(INT_MAX), "dchag::", where, ": view ",
          shape_of(v), " has more elements than one MPI call can carry (", INT_MAX, ")");
}

template <class View>
void require_writable() {
  static_assert(!std::is_const<typename View::value_type>::value,
                "dchag collectives: the result view must not be const");
}

// Is the flat memory order row-major? (Concatenation along the first dimension is then
// concatenation of the flat arrays.) Extents of 1 have no meaningful stride.
template <class View>
bool row_major(const View& v) {
  std::size_t expected = 1;
  for (int r = static_cast<int>(View::rank) - 1; r >= 0; --r) {
    if (v.extent(r) > 1 && static_cast<std::size_t>(v.stride(r)) != expected) return false;
    expected *= v.extent(r);
  }
  return true;
}

// full = p blocks of local along the first dimension (checked when ranks are equal;
// otherwise only the sizes must agree, e.g. a flat buffer gathered into a rank-3 view).
template <class Local, class Full>
void check_blocks(const char* where, const Local& local, const Full& full, int p) {
  require(row_major(local) && row_major(full), "dchag::", where, ": views ", shape_of(local),
          " and ", shape_of(full), " must be row-major (LayoutRight) to be split along the "
          "first dimension");
  require(full.size() == local.size() * static_cast<std::size_t>(p), "dchag::", where,
          ": the full view ", shape_of(full), " has ", full.size(),
          " elements, but the local view ", shape_of(local), " has ", local.size(), " x ", p,
          " ranks = ", local.size() * static_cast<std::size_t>(p));
  if constexpr (static_cast<unsigned>(Local::rank) == static_cast<unsigned>(Full::rank)) {
    bool same = Local::rank == 0 || full.extent(0) == local.extent(0) * p;
    for (unsigned r = 1; r < Local::rank; ++r) same = same && full.extent(r) == local.extent(r);
    require(same, "dchag::", where, ": the full view ", shape_of(full), " is not ", p,
            " blocks of the local view ", shape_of(local), " along the first dimension");
  }
}

// The checks of a collective between a rank's block and the full view, shared by the blocking
// call and its start_* form so that both refuse the same calls with the same message.
template <class ExecSpace, class Local, class Full>
void check_block_views(const char* where, const Local& local, const Full& full, int p) {
  check_view<ExecSpace>(where, local);
  check_view<ExecSpace>(where, full);
  static_assert(std::is_same<typename Local::non_const_value_type,
                             typename Full::non_const_value_type>::value,
                "dchag collectives: local and full must hold the same scalar type");
  static_assert(std::is_same<typename Local::memory_space, typename Full::memory_space>::value,
                "dchag collectives: local and full must live in the same memory space");
  check_blocks(where, local, full, p);
}

// Throws the same dchag::Error on every rank of comm unless every rank passes the same n
// (collective; min of n and of ~n in one call gives the smallest and the largest).
inline void require_same_count(const Communicator& comm, std::uint64_t n, const char* where) {
  const std::uint64_t mine[2] = {n, ~n};
  std::uint64_t least[2] = {0, 0};
  check_mpi(
      timed_mpi([&] { return MPI_Allreduce(mine, least, 2, MPI_UINT64_T, MPI_MIN, comm.get()); }),
      "MPI_Allreduce", where);
  const std::uint64_t lo = least[0], hi = ~least[1];
  require(lo == hi, "dchag::", where, ": the ranks pass views of different sizes (", lo,
          " to ", hi, " elements; this rank ", n, "): every rank must call it with the same "
          "shapes (do the ranks disagree on the batch size or the model?)");
}

inline std::string concat_counts(const std::vector<std::size_t>& counts) {
  std::string s = "{";
  for (std::size_t i = 0; i < counts.size(); ++i) s += (i ? ", " : "") + std::to_string(counts[i]);
  return s + "}";
}

template <class ExecSpace, class View>
void all_reduce(const ExecSpace& space, const Communicator& comm, const View& view, MPI_Op op,
                const char* where) {
  require_writable<View>();
  check_view<ExecSpace>(where, view);
  if constexpr (low_precision_view<View>()) {
    if (comm.size() > 1) {
      const auto wide = widen(space, view, true);
      all_reduce(space, comm, wide, op, where);
      narrow(space, wide, view);
      return;
    }
  }
  space.fence();
  const int p = comm.size();
  const auto up = static_cast<std::uint64_t>(p);
  const std::uint64_t n = view.size() * sizeof(typename View::value_type);
  CommStats::add(2 * (up - 1) * n / up);
  if (p == 1) return;
  require_same_count(comm, view.size(), where);
  if (view.size() == 0) return;
  using T = typename View::non_const_value_type;
  auto buffer = mpi_buffer(space, view, true);
  check_mpi(timed_mpi([&] {
              return MPI_Allreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(view.size()),
                                   MpiType<T>::get(), op, comm.get());
            }),
            "MPI_Allreduce", where);
  mpi_copy_out(space, view, buffer);
}

inline double all_reduce_scalar(const Communicator& comm, double x, MPI_Op op,
                                const char* where) {
  const int p = comm.size();
  const auto up = static_cast<std::uint64_t>(p);
  CommStats::add(2 * (up - 1) * sizeof(double) / up);
  if (p == 1) return x;
  double result = 0;
  check_mpi(timed_mpi([&] { return MPI_Allreduce(&x, &result, 1, MPI_DOUBLE, op, comm.get()); }),
            "MPI_Allreduce", where);
  return result;
}

}  // namespace Impl

// view <- sum over the ranks of comm, element by element (in place).
template <class ExecSpace, class View>
void all_reduce_sum(const ExecSpace& space, const Communicator& comm, const View& view) {
  Impl::all_reduce(space, comm, view, MPI_SUM, "all_reduce_sum");
}

// view <- max over the ranks of comm, element by element (in place).
template <class ExecSpace, class View>
void all_reduce_max(const ExecSpace& space, const Communicator& comm, const View& view) {
  Impl::all_reduce(space, comm, view, MPI_MAX, "all_reduce_max");
}

// full <- concatenation of every rank's local along the first dimension, in rank order.
// local may be rank r's own block of full (in place).
template <class ExecSpace, class Local, class Full>
void all_gather(const ExecSpace& space, const Communicator& comm, const Local& local,
                const Full& full) {
  const char* where = "all_gather";
  Impl::require_writable<Full>();
  const int p = comm.size();
  Impl::check_block_views<ExecSpace>(where, local, full, p);
  space.fence();
  using T = typename Full::non_const_value_type;
  const std::size_t n = local.size();
  CommStats::add(static_cast<std::uint64_t>(p - 1) * n * sizeof(T));  // (p-1)/p * n_full
  const int r = comm.rank();
  const bool in_place = local.data() == full.data() + n * static_cast<std::size_t>(r);
  if (p > 1) Impl::require_same_count(comm, n, where);
  if (p == 1 || n == 0) {
    if (!in_place && n > 0) {
      Kokkos::deep_copy(space, Impl::flat(full), Impl::flat(local));
      space.fence();  // results are complete on return, as after MPI
    }
    return;
  }
  auto full_buffer = Impl::mpi_buffer(space, full, false);
  if constexpr (Impl::mpi_accessible<typename Full::memory_space>()) {
    // MPI forbids overlapping send and receive buffers; MPI_IN_PLACE is the way to say so.
    Impl::check_mpi(Impl::timed_mpi([&] {
                      return MPI_Allgather(in_place ? MPI_IN_PLACE : local.data(),
                                           static_cast<int>(n), Impl::MpiType<T>::get(),
                                           full_buffer.data(), static_cast<int>(n),
                                           Impl::MpiType<T>::get(), comm.get());
                    }),
                    "MPI_Allgather", where);
  } else {
    // Staged: the host copy of full is separate from local, no aliasing possible.
    auto local_buffer = Impl::mpi_buffer(space, local, true);
    Impl::check_mpi(Impl::timed_mpi([&] {
                      return MPI_Allgather(local_buffer.data(), static_cast<int>(n),
                                           Impl::MpiType<T>::get(), full_buffer.data(),
                                           static_cast<int>(n), Impl::MpiType<T>::get(),
                                           comm.get());
                    }),
                    "MPI_Allgather", where);
  }
  Impl::mpi_copy_out(space, full, full_buffer);
}

// full <- concatenation of every rank's local along the first dimension, in rank order, where
// rank r's local holds counts[r] rows (first-dimension entries; any of them may be 0). counts is
// the same on every rank (checked: one all-reduce of 2 p values). local may be rank r's own
// block of full (in place).
template <class ExecSpace, class Local, class Full>
void all_gatherv(const ExecSpace& space, const Communicator& comm, const Local& local,
                 const Full& full, const std::vector<std::size_t>& counts) {
  const char* where = "all_gatherv";
  Impl::require_writable<Full>();
  Impl::check_view<ExecSpace>(where, local);
  Impl::check_view<ExecSpace>(where, full);
  static_assert(std::is_same<typename Local::non_const_value_type,
                             typename Full::non_const_value_type>::value,
                "dchag::all_gatherv: local and full must hold the same scalar type");
  static_assert(std::is_same<typename Local::memory_space, typename Full::memory_space>::value,
                "dchag::all_gatherv: local and full must live in the same memory space");
  static_assert(static_cast<unsigned>(Local::rank) == static_cast<unsigned>(Full::rank) &&
                    Local::rank > 0,
                "dchag::all_gatherv: local and full must have the same rank (at least 1)");
  const int p = comm.size(), r = comm.rank();
  Impl::require(counts.size() == static_cast<std::size_t>(p), "dchag::", where, ": ",
                counts.size(), " counts for a communicator of ", p, " ranks");
  Impl::require(Impl::row_major(local) && Impl::row_major(full), "dchag::", where, ": views ",
                Impl::shape_of(local), " and ", Impl::shape_of(full),
                " must be row-major (LayoutRight) to be split along the first dimension");
  std::size_t rows = 0;
  for (auto c : counts) rows += c;
  bool same = local.extent(0) == counts[static_cast<std::size_t>(r)] && full.extent(0) == rows;
  for (unsigned d = 1; d < Local::rank; ++d) same = same && full.extent(d) == local.extent(d);
  Impl::require(same, "dchag::", where, ": the full view ", Impl::shape_of(full),
                " must be the blocks of counts ", Impl::concat_counts(counts),
                " along the first dimension, and this rank's (", r, ") local view ",
                Impl::shape_of(local), " block ", r);
  std::size_t row = 1;
  for (unsigned d = 1; d < Local::rank; ++d) row *= local.extent(d);
  std::vector<int> elems(counts.size()), displs(counts.size());
  std::size_t offset = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    elems[i] = static_cast<int>(counts[i] * row);  // full.size() <= INT_MAX: check_view
    displs[i] = static_cast<int>(offset);
    offset += counts[i] * row;
  }
  space.fence();
  using T = typename Full::non_const_value_type;
  const std::size_t n = local.size();
  CommStats::add(static_cast<std::uint64_t>(full.size() - n) * sizeof(T));
  const bool in_place =
      local.data() == full.data() + static_cast<std::size_t>(displs[static_cast<std::size_t>(r)]);
  if (p > 1) {
    // Every rank must pass the same counts: min of each count and of its complement.
    std::vector<std::uint64_t> mine(2 * counts.size()), least(2 * counts.size());
    for (std::size_t i = 0; i < counts.size(); ++i) {
      mine[i] = counts[i];
      mine[counts.size() + i] = ~std::uint64_t(counts[i]);
    }
    Impl::check_mpi(Impl::timed_mpi([&] {
                      return MPI_Allreduce(mine.data(), least.data(), static_cast<int>(mine.size()),
                                           MPI_UINT64_T, MPI_MIN, comm.get());
                    }),
                    "MPI_Allreduce", where);
    bool agree = true;
    for (std::size_t i = 0; i < counts.size(); ++i)
      agree = agree && least[i] == ~least[counts.size() + i];
    Impl::require(agree, "dchag::", where, ": the ranks pass different counts (this rank ",
                  Impl::concat_counts(counts), "): every rank must call it with the same "
                  "counts");
  }
  if (p == 1 || full.size() == 0) {
    if (!in_place && n > 0) {
      Kokkos::deep_copy(space, Impl::flat(full), Impl::flat(local));
      space.fence();
    }
    return;
  }
  auto full_buffer = Impl::mpi_buffer(space, full, false);
  if constexpr (Impl::mpi_accessible<typename Full::memory_space>()) {
    Impl::check_mpi(Impl::timed_mpi([&] {
                      return MPI_Allgatherv(in_place ? MPI_IN_PLACE : local.data(),
                                            static_cast<int>(n), Impl::MpiType<T>::get(),
                                            full_buffer.data(), elems.data(), displs.data(),
                                            Impl::MpiType<T>::get(), comm.get());
                    }),
                    "MPI_Allgatherv", where);
  } else {
    auto local_buffer = Impl::mpi_buffer(space, local, true);
    Impl::check_mpi(Impl::timed_mpi([&] {
                      return MPI_Allgatherv(local_buffer.data(), static_cast<int>(n),
                                            Impl::MpiType<T>::get(), full_buffer.data(),
                                            elems.data(), displs.data(), Impl::MpiType<T>::get(),
                                            comm.get());
                    }),
                    "MPI_Allgatherv", where);
  }
  Impl::mpi_copy_out(space, full, full_buffer);
}

// local <- block comm.rank() (along the first dimension) of the sum over ranks of full.
// The inverse (adjoint) of all_gather. local must not overlap full.
template <class ExecSpace, class Full, class Local>
void reduce_scatter_sum(const ExecSpace& space, const Communicator& comm, const Full& full,
                        const Local& local) {
  const char* where = "reduce_scatter_sum";
  Impl::require_writable<Local>();
  const int p = comm.size();
  Impl::check_block_views<ExecSpace>(where, local, full, p);
  using T = typename Local::non_const_value_type;
  const std::size_t n = local.size();
  {
    // Overlap would let MPI read data it has already overwritten.
    const auto l0 = reinterpret_cast<std::uintptr_t>(local.data());
    const auto f0 = reinterpret_cast<std::uintptr_t>(full.data());
    const bool overlap = n > 0 && l0 < f0 + full.size() * sizeof(T) && f0 < l0 + n * sizeof(T);
    Impl::require(!overlap, "dchag::", where, ": local ", Impl::shape_of(local),
                  " overlaps full ", Impl::shape_of(full));
  }
  if constexpr (Impl::low_precision_view<Local>()) {
    if (p > 1) {
      const auto wide_full = Impl::widen(space, full, true);
      const auto wide_local = Impl::widen(space, local, false);
      reduce_scatter_sum(space, comm, wide_full, wide_local);
      Impl::narrow(space, wide_local, local);
      return;
    }
  }
  space.fence();
  CommStats::add(static_cast<std::uint64_t>(p - 1) * n * sizeof(T));  // (p-1)/p * n_full
  if (p > 1) Impl::require_same_count(comm, n, where);
  if (p == 1 || n == 0) {
    if (n > 0) {
      Kokkos::deep_copy(space, Impl::flat(local), Impl::flat(full));
      space.fence();
    }
    return;
  }
  auto full_buffer = Impl::mpi_buffer(space, full, true);
  auto local_buffer = Impl::mpi_buffer(space, local, false);
  Impl::check_mpi(Impl::timed_mpi([&] {
                    return MPI_Reduce_scatter_block(full_buffer.data(), local_buffer.data(),
                                                    static_cast<int>(n), Impl::MpiType<T>::get(),
                                                    MPI_SUM, comm.get());
                  }),
                  "MPI_Reduce_scatter_block", where);
  Impl::mpi_copy_out(space, local, local_buffer);
}

namespace Impl {

// A request that completes `inner` (a float reduction) and then rounds its result into the
// 16-bit view. Dropped before wait(), it drops `inner` too, which waits for MPI as any request.
template <class ExecSpace, class View>
CommRequest then_narrow(const ExecSpace& space, CommRequest inner, const WideView<View>& wide,
                        const View& view, const char* where) {
  // std::function needs a copyable callable; the request is move-only.
  auto held = std::make_shared<CommRequest>(std::move(inner));
  return CommRequest(where, [space, held, wide, view] {
    held->wait();
    narrow(space, wide, view);
  });
}

}  // namespace Impl

// Non-blocking collectives: the same results as all_gather, reduce_scatter_sum and
// all_reduce_sum once the returned request's wait() has returned (see the top of the file).
// The checks (shapes, and the element counts between the ranks: a short blocking all-reduce)
// happen before the start, so a bad call throws here, before MPI holds any buffer. The request
// holds copies of the view handles (managed views stay allocated until it completes).

// Starts full <- concatenation of every rank's local (all_gather).
template <class ExecSpace, class Local, class Full>
CommRequest start_all_gather(const ExecSpace& space, const Communicator& comm, const Local& local,
                             const Full& full) {
  const char* where = "start_all_gather";
  Impl::require_writable<Full>();
  const int p = comm.size();
  Impl::check_block_views<ExecSpace>(where, local, full, p);
  space.fence();
  using T = typename Full::non_const_value_type;
  const std::size_t n = local.size();
  CommStats::add(static_cast<std::uint64_t>(p - 1) * n * sizeof(T));
  const bool in_place = local.data() == full.data() + n * static_cast<std::size_t>(comm.rank());
  if (p > 1) Impl::require_same_count(comm, n, where);
  if (p == 1 || n == 0) {
    if (!in_place && n > 0) {
      Kokkos::deep_copy(space, Impl::flat(full), Impl::flat(local));
      space.fence();
    }
    return CommRequest();
  }
  MPI_Request request = MPI_REQUEST_NULL;
  if constexpr (Impl::mpi_accessible<typename Full::memory_space>()) {
    Impl::check_mpi(MPI_Iallgather(in_place ? MPI_IN_PLACE : local.data(), static_cast<int>(n),
                                   Impl::MpiType<T>::get(), full.data(), static_cast<int>(n),
                                   Impl::MpiType<T>::get(), comm.get(), &request),
                    "MPI_Iallgather", where);
    return CommRequest(request, where, [local, full] {});
  } else {
    auto full_buffer = Impl::mpi_buffer(space, full, false);
    auto local_buffer = Impl::mpi_buffer(space, local, true);
    Impl::check_mpi(MPI_Iallgather(local_buffer.data(), static_cast<int>(n),
                                   Impl::MpiType<T>::get(), full_buffer.data(),
                                   static_cast<int>(n), Impl::MpiType<T>::get(), comm.get(),
                                   &request),
                    "MPI_Iallgather", where);
    return CommRequest(request, where, [space, full, full_buffer, local_buffer] {
      Impl::mpi_copy_out(space, full, full_buffer);
    });
  }
}

// Starts local <- this rank's block of the sum over ranks of full (reduce_scatter_sum).
template <class ExecSpace, class Full, class Local>
CommRequest start_reduce_scatter_sum(const ExecSpace& space, const Communicator& comm,
                                     const Full& full, const Local& local) {
  const char* where = "start_reduce_scatter_sum";
  Impl::require_writable<Local>();
  const int p = comm.size();
  Impl::check_block_views<ExecSpace>(where, local, full, p);
  using T = typename Local::non_const_value_type;
  const std::size_t n = local.size();
  {
    const auto l0 = reinterpret_cast<std::uintptr_t>(local.data());
    const auto f0 = reinterpret_cast<std::uintptr_t>(full.data());
    const bool overlap = n > 0 && l0 < f0 + full.size() * sizeof(T) && f0 < l0 + n * sizeof(T);
    Impl::require(!overlap, "dchag::", where, ": local ", Impl::shape_of(local),
                  " overlaps full ", Impl::shape_of(full));
  }
  if constexpr (Impl::low_precision_view<Local>()) {
    if (p > 1) {
      const auto wide_full = Impl::widen(space, full, true);
      const auto wide_local = Impl::widen(space, local, false);
      return Impl::then_narrow(
          space, start_reduce_scatter_sum(space, comm, wide_full, wide_local), wide_local, local,
          where);
    }
  }
  space.fence();
  CommStats::add(static_cast<std::uint64_t>(p - 1) * n * sizeof(T));
  if (p > 1) Impl::require_same_count(comm, n, where);
  if (p == 1 || n == 0) {
    if (n > 0) {
      Kokkos::deep_copy(space, Impl::flat(local), Impl::flat(full));
      space.fence();
    }
    return CommRequest();
  }
  auto full_buffer = Impl::mpi_buffer(space, full, true);
  auto local_buffer = Impl::mpi_buffer(space, local, false);
  MPI_Request request = MPI_REQUEST_NULL;
  Impl::check_mpi(MPI_Ireduce_scatter_block(full_buffer.data(), local_buffer.data(),
                                            static_cast<int>(n), Impl::MpiType<T>::get(), MPI_SUM,
                                            comm.get(), &request),
                  "MPI_Ireduce_scatter_block", where);
  return CommRequest(request, where, [space, full, local, full_buffer, local_buffer] {
    Impl::mpi_copy_out(space, local, local_buffer);
  });
}

// Starts view <- sum over the ranks of comm, element by element, in place (all_reduce_sum).
template <class ExecSpace, class View>
CommRequest start_all_reduce_sum(const ExecSpace& space, const Communicator& comm,
                                 const View& view) {
  const char* where = "start_all_reduce_sum";
  Impl::require_writable<View>();
  Impl::check_view<ExecSpace>(where, view);
  if constexpr (Impl::low_precision_view<View>()) {
    if (comm.size() > 1) {
      const auto wide = Impl::widen(space, view, true);
      return Impl::then_narrow(space, start_all_reduce_sum(space, comm, wide), wide, view, where);
    }
  }
  space.fence();
  const int p = comm.size();
  const auto up = static_cast<std::uint64_t>(p);
  using T = typename View::non_const_value_type;
  CommStats::add(2 * (up - 1) * (view.size() * sizeof(T)) / up);
  if (p == 1) return CommRequest();
  Impl::require_same_count(comm, view.size(), where);
  if (view.size() == 0) return CommRequest();
  auto buffer = Impl::mpi_buffer(space, view, true);
  MPI_Request request = MPI_REQUEST_NULL;
  Impl::check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(view.size()),
                                 Impl::MpiType<T>::get(), MPI_SUM, comm.get(), &request),
                  "MPI_Iallreduce", where);
  return CommRequest(request, where,
                     [space, view, buffer] { Impl::mpi_copy_out(space, view, buffer); });
}

// view <- root's view, on every rank.
template <class ExecSpace, class View>
void broadcast(const ExecSpace& space, const Communicator& comm, const View& view, int root) {
  const char* where = "broadcast";
  Impl::require_writable<View>();
  Impl::check_view<ExecSpace>(where, view);
  const int p = comm.size();
  Impl::require(root >= 0 && root < p, "dchag::broadcast: root ", root,
                " is not a rank of a communicator of size ", p);
  space.fence();
  using T = typename View::non_const_value_type;
  const auto up = static_cast<std::uint64_t>(p);
  const std::uint64_t n = view.size() * sizeof(T);
  CommStats::add((up - 1) * n / up);
  if (p == 1) return;
  Impl::require_same_count(comm, view.size(), where);
  if (view.size() == 0) return;
  // Only the root's data needs to reach MPI, and only the others' needs to come back.
  const bool is_root = comm.rank() == root;
  auto buffer = Impl::mpi_buffer(space, view, is_root);
  Impl::check_mpi(Impl::timed_mpi([&] {
                    return MPI_Bcast(buffer.data(), static_cast<int>(view.size()),
                                     Impl::MpiType<T>::get(), root, comm.get());
                  }),
                  "MPI_Bcast", where);
  if (!is_root) Impl::mpi_copy_out(space, view, buffer);
}

// Scalars (losses, norms, counts): the result on every rank.
inline double all_reduce_sum(const Communicator& comm, double x) {
  return Impl::all_reduce_scalar(comm, x, MPI_SUM, "all_reduce_sum");
}
inline double all_reduce_max(const Communicator& comm, double x) {
  return Impl::all_reduce_scalar(comm, x, MPI_MAX, "all_reduce_max");
}
inline double all_reduce_min(const Communicator& comm, double x) {
  return Impl::all_reduce_scalar(comm, x, MPI_MIN, "all_reduce_min");
}

}  // namespace dchag

#endif
