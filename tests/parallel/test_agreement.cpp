#include <dchag/core/error.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>

#include <stdexcept>
#include <string>

#include "test_common.hpp"

namespace {
// doctest::Contains takes a C string; this one takes what the test computed.
doctest::Contains contains(const std::string& text) {
  return doctest::Contains(text.c_str());
}
}  // namespace

TEST_CASE("check_agreement passes when every rank describes the same configuration") {
  const dchag::Communicator comm;
  CHECK_NOTHROW(dchag::check_agreement(comm, "model config", "C=80 G=8 D=256 depth=4"));
  CHECK_NOTHROW(dchag::check_agreement(comm, "empty", ""));
}

TEST_CASE("check_agreement throws on every rank when one rank differs, and does not hang") {
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  if (p > 1) {
    const std::string same = "C=80 G=8 D=256 depth=4";
    const std::string mine = r == 1 ? "C=80 G=4 D=256 depth=4" : same;
    // Every rank sees the same message: what, the first differing rank and both descriptions.
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "model config", mine),
                         doctest::Contains("model config differs between ranks"), dchag::Error);
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "model config", mine),
                         doctest::Contains("rank 1 differs from rank 0"), dchag::Error);
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "model config", mine),
                         contains("rank 0: " + same), dchag::Error);
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "model config", mine),
                         doctest::Contains("rank 1: C=80 G=4 D=256 depth=4"), dchag::Error);

    // Only the last rank differs, with an empty description: it is the one named.
    const std::string last = r == p - 1 ? "" : "tp=2";
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "grid", last),
                         contains("rank " + std::to_string(p - 1) +
                                           " differs from rank 0"),
                         dchag::Error);

    // Every rank different: rank 1 is the first to differ.
    CHECK_THROWS_WITH_AS(dchag::check_agreement(comm, "seed", "seed=" + std::to_string(r)),
                         doctest::Contains("rank 1: seed=1"), dchag::Error);
  }
  // The communicator is still in step: agreement and collectives work afterwards.
  CHECK_NOTHROW(dchag::check_agreement(comm, "after", "same"));
  CHECK(dchag::all_reduce_sum(comm, static_cast<double>(r)) == p * (p - 1) / 2.0);
  comm.barrier();
}

TEST_CASE("on_every_rank turns one rank's failure into the same error on every rank") {
  const dchag::Communicator comm;
  const int p = comm.size(), r = comm.rank();
  int calls = 0;
  CHECK_NOTHROW(dchag::on_every_rank(comm, [&] { ++calls; }));
  CHECK(calls == 1);
  // Only the last rank fails (a file only it cannot write): every rank throws its message.
  auto last_fails = [&] {
    if (r == p - 1) throw std::runtime_error("cannot write /nowhere/metrics.csv");
  };
  CHECK_THROWS_WITH_AS(dchag::on_every_rank(comm, last_fails),
                       doctest::Contains("cannot write /nowhere/metrics.csv"), dchag::Error);
  if (p > 1)
    CHECK_THROWS_WITH_AS(dchag::on_every_rank(comm, last_fails),
                         contains("[rank " + std::to_string(p - 1) + " of " + std::to_string(p) +
                                  "]"),
                         dchag::Error);
  // Several fail: the lowest failing rank's message; exceptions of any type are caught.
  CHECK_THROWS_WITH_AS(dchag::on_every_rank(comm, [&] { throw r; }),
                       doctest::Contains("not a std::exception"), dchag::Error);
  CHECK(dchag::all_reduce_sum(comm, 1.0) == p);
}
