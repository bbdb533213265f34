#ifndef DCHAG_PARALLEL_COMMUNICATOR_HPP
#define DCHAG_PARALLEL_COMMUNICATOR_HPP

// dchag::Communicator: the library's own handle on an MPI communicator.
//
// The constructor duplicates the communicator it is given (as ArborX does), so that messages
// of the library can never match messages of the application, and sets MPI_ERRORS_RETURN on the
// duplicate so that a failing MPI call comes back to us as a code and leaves as a dchag::Error
// instead of aborting the job.
//
// Ownership is shared: copies refer to the same MPI_Comm (copying is a reference-count bump, so
// layers and process grids hold Communicators by value; a copy is not a new duplicate), and
// MPI_Comm_free runs when the last copy goes away, unless MPI is already finalized by then (a
// Communicator in a static, or one that outlives MPI_Finalize, must not crash the exit path).

#include <mpi.h>

#include <memory>
#include <string>

#include <dchag/core/error.hpp>

namespace dchag {
namespace Impl {

inline std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(text, static_cast<std::size_t>(length));
}

// Every MPI call of the library goes through this: `what` names the call and the caller.
inline void check_mpi(int code, const char* call, const char* where) {
  if (code != MPI_SUCCESS)
    throw Error(concat("dchag::", where, ": ", call, " failed with MPI error ", code, ": ",
                       mpi_error_text(code)));
}

inline bool mpi_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

inline bool mpi_finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

// Owns one MPI_Comm (MPI_COMM_NULL allowed: what a split with MPI_UNDEFINED gives).
class CommHandle {
 public:
  explicit CommHandle(MPI_Comm comm) : m_comm(comm) {}
  CommHandle(const CommHandle&) = delete;
  CommHandle& operator=(const CommHandle&) = delete;
  ~CommHandle() {
    // Destructors must not throw: a failing free is ignored (nothing useful can be done).
    if (m_comm != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&m_comm);
  }
  MPI_Comm get() const { return m_comm; }

 private:
  MPI_Comm m_comm;
};

}  // namespace Impl

class Communicator {
 public:
  // Collective over `comm`: duplicates it. Default: a duplicate of MPI_COMM_WORLD.
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) {
    Impl::require(Impl::mpi_initialized(),
                  "dchag::Communicator: MPI is not initialized (call MPI_Init first)");
    Impl::require(comm != MPI_COMM_NULL, "dchag::Communicator: cannot duplicate MPI_COMM_NULL");
    MPI_Comm dup = MPI_COMM_NULL;
    Impl::check_mpi(MPI_Comm_dup(comm, &dup), "MPI_Comm_dup", "Communicator");
    adopt(dup, "Communicator");
  }

  // The duplicated handle (valid while any copy of this Communicator lives).
  MPI_Comm get() const { return m_handle ? m_handle->get() : MPI_COMM_NULL; }

  // False for the result of split(MPI_UNDEFINED, ...) (this rank is in no new communicator)
  // and for a moved-from Communicator.
  bool valid() const { return get() != MPI_COMM_NULL; }

  int rank() const {
    require_valid("rank");
    int r = 0;
    Impl::check_mpi(MPI_Comm_rank(get(), &r), "MPI_Comm_rank", "Communicator::rank");
    return r;
  }

  int size() const {
    require_valid("size");
    int s = 0;
    Impl::check_mpi(MPI_Comm_size(get(), &s), "MPI_Comm_size", "Communicator::size");
    return s;
  }

  // Collective: ranks with the same colour form one new communicator, ordered by (key, rank).
  // color must be >= 0, or MPI_UNDEFINED for ranks that join none (they get !valid()).
  Communicator split(int color, int key) const {
    require_valid("split");
    Impl::require(color >= 0 || color == MPI_UNDEFINED, "dchag::Communicator::split: color ",
                  color, " is negative (use a colour >= 0, or MPI_UNDEFINED to join none)");
    MPI_Comm part = MPI_COMM_NULL;
    Impl::check_mpi(MPI_Comm_split(get(), color, key, &part), "MPI_Comm_split",
                    "Communicator::split");
    return Communicator(part, Adopt{});
  }

  void barrier() const {
    require_valid("barrier");
    Impl::check_mpi(MPI_Barrier(get()), "MPI_Barrier", "Communicator::barrier");
  }

 private:
  struct Adopt {};
  // Takes ownership of a communicator MPI has just created for us (no second duplicate).
  Communicator(MPI_Comm comm, Adopt) { adopt(comm, "Communicator::split"); }

  void adopt(MPI_Comm comm, const char* where) {
    // Owned before anything can throw, so the new communicator is freed on every path.
    m_handle = std::make_shared<Impl::CommHandle>(comm);
    if (comm != MPI_COMM_NULL)
      Impl::check_mpi(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN),
                      "MPI_Comm_set_errhandler", where);
  }

  void require_valid(const char* what) const {
    Impl::require(valid(), "dchag::Communicator::", what,
                  ": this Communicator holds no communicator (split with MPI_UNDEFINED, or "
                  "moved from)");
  }

  std::shared_ptr<const Impl::CommHandle> m_handle;
};

}  // namespace dchag

#endif
