#ifndef DCHAG_PARALLEL_AGREEMENT_HPP
#define DCHAG_PARALLEL_AGREEMENT_HPP

// check_agreement: do all ranks hold the same configuration?
// on_every_rank: a failure of one rank becomes the same error on every rank.
//
// Ranks that disagree on a model or grid configuration would enter different collectives (or
// the same ones with different counts) and hang or corrupt each other's data much later, far
// from the cause. Each rank describes its configuration as text; the check compares hashes and,
// only if they differ, gathers the descriptions so that the error can show the first difference.
// Every rank takes the same sequence of collectives whatever the descriptions are, so the check
// itself can never hang, and it throws the same dchag::Error on every rank.
//
// Its traffic is set-up, not training: it is not counted in dchag::CommStats.

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/hash.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {
namespace Impl {

// Every rank's description, in rank order (collective).
inline std::vector<std::string> all_gather_strings(const Communicator& comm,
                                                   const std::string& mine) {
  const char* where = "check_agreement";
  const int p = comm.size();
  // An over-long description is refused after agreeing on it, so that no rank leaves early.
  const long long my_length = static_cast<long long>(mine.size());
  long long longest = 0;
  check_mpi(MPI_Allreduce(&my_length, &longest, 1, MPI_LONG_LONG, MPI_MAX, comm.get()),
            "MPI_Allreduce", where);
  require(longest * p <= INT_MAX, "dchag::check_agreement: descriptions of up to ", longest,
          " characters on ", p, " ranks are too long to gather");

  const int length = static_cast<int>(mine.size());
  const auto ranks = static_cast<std::size_t>(p);
  std::vector<int> lengths(ranks), offsets(ranks);
  check_mpi(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm.get()),
            "MPI_Allgather", where);
  int total = 0;
  for (std::size_t r = 0; r < ranks; ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::vector<char> all(static_cast<std::size_t>(total) + 1);
  check_mpi(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(),
                           offsets.data(), MPI_CHAR, comm.get()),
            "MPI_Allgatherv", where);
  std::vector<std::string> out;
  out.reserve(ranks);
  for (std::size_t r = 0; r < ranks; ++r)
    out.emplace_back(all.data() + offsets[r], static_cast<std::size_t>(lengths[r]));
  return out;
}

// Collective over comm: returns when `error` is empty on every rank; otherwise throws on every
// rank the message of the lowest failing rank. Every rank takes the same collectives whatever
// happened, so a failure on one rank never leaves the others waiting.
inline void agree_on_success(const Communicator& comm, const std::string& error) {
  const char* where = "agree_on_success";
  const int size = comm.size();
  const int mine = error.empty() ? size : comm.rank();
  int first = size;
  check_mpi(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm.get()), "MPI_Allreduce",
            where);
  if (first == size) return;
  std::string text = comm.rank() == first ? error : std::string();
  long long length = static_cast<long long>(text.size());
  check_mpi(MPI_Bcast(&length, 1, MPI_LONG_LONG, first, comm.get()), "MPI_Bcast", where);
  length = std::min<long long>(length, INT_MAX);
  text.resize(static_cast<std::size_t>(length));
  if (length > 0)
    check_mpi(MPI_Bcast(&text[0], static_cast<int>(length), MPI_CHAR, first, comm.get()),
              "MPI_Bcast", where);
  if (size > 1) text += concat(" [rank ", first, " of ", size, "]");
  throw Error(text);
}

}  // namespace Impl

// Collective over comm. Returns normally when every rank passed the same description; otherwise
// throws on every rank: "<what> differs between ranks: rank R differs from rank 0 ...".
inline void check_agreement(const Communicator& comm, const std::string& what,
                            const std::string& description) {
  const char* where = "check_agreement";
  const std::uint64_t hash = Impl::fnv1a(description);
  // min and max in one call: max(h) = ~min(~h).
  const std::uint64_t mine[2] = {hash, ~hash};
  std::uint64_t least[2] = {0, 0};
  Impl::check_mpi(MPI_Allreduce(mine, least, 2, MPI_UINT64_T, MPI_MIN, comm.get()),
                  "MPI_Allreduce", where);
  const std::uint64_t lo = least[0], hi = ~least[1];
  if (lo == hi) return;  // the same branch on every rank: lo and hi are the same everywhere

  const std::vector<std::string> all = Impl::all_gather_strings(comm, description);
  std::size_t first = 1;
  while (first < all.size() && all[first] == all[0]) ++first;
  // Different hashes mean different texts, so `first` is a real rank; stay safe regardless.
  if (first == all.size()) first = all.size() - 1;
  throw Error(Impl::concat("dchag: ", what, " differs between ranks (", comm.size(),
                           " ranks): rank ", first, " differs from rank 0\n  rank 0: ", all[0],
                           "\n  rank ", first, ": ", all[first]));
}

// Runs f() on this rank and agrees with the other ranks of comm on the outcome (collective):
// when f throws on any rank, every rank throws a dchag::Error with the message of the lowest
// failing rank, naming that rank; when it succeeds everywhere, returns normally. Wrap in it
// whatever can fail on some ranks only (a file that only rank 0 writes, an allocation, a
// directory that one node cannot create) and is followed by collectives, so that one rank's
// failure can never leave the others waiting in them.
template <class F>
void on_every_rank(const Communicator& comm, F&& f) {
  std::string error;
  try {
    std::forward<F>(f)();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "an exception without a message";
  } catch (...) {
    error = "an exception that is not a std::exception";
  }
  Impl::agree_on_success(comm, error);
}

}  // namespace dchag

#endif
