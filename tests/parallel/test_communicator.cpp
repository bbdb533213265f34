#include <dchag/core/error.hpp>
#include <dchag/parallel/communicator.hpp>

#include <utility>
#include <vector>

#include "test_common.hpp"

namespace {
int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
}  // namespace

TEST_CASE("Communicator duplicates the communicator it is given") {
  dchag::Communicator comm;
  CHECK(comm.valid());
  CHECK(comm.size() == world_size());
  CHECK(comm.rank() == world_rank());
  CHECK(comm.get() != MPI_COMM_WORLD);
  int relation = MPI_UNEQUAL;
  MPI_Comm_compare(comm.get(), MPI_COMM_WORLD, &relation);
  CHECK(relation == MPI_CONGRUENT);  // same group and order, separate message space

  // A second duplicate of the same communicator is yet another handle.
  dchag::Communicator other(comm.get());
  CHECK(other.get() != comm.get());
  CHECK(other.size() == comm.size());

  // Copies share the one duplicate (shared ownership, no MPI call).
  const dchag::Communicator copy = comm;
  CHECK(copy.get() == comm.get());

  dchag::Communicator self(MPI_COMM_SELF);
  CHECK(self.size() == 1);
  CHECK(self.rank() == 0);
  comm.barrier();
}

TEST_CASE("Communicator outlives the copy it was made from") {
  MPI_Comm handle = MPI_COMM_NULL;
  dchag::Communicator survivor(MPI_COMM_SELF);
  {
    dchag::Communicator original;
    handle = original.get();
    survivor = original;
  }
  CHECK(survivor.get() == handle);
  CHECK(survivor.size() == world_size());
  survivor.barrier();

  // A moved-from Communicator holds nothing and says so instead of crashing.
  dchag::Communicator taken = std::move(survivor);
  CHECK(taken.get() == handle);
  CHECK_FALSE(survivor.valid());  // NOLINT(bugprone-use-after-move): that is the point
  CHECK_THROWS_WITH_AS(survivor.rank(), doctest::Contains("moved from"), dchag::Error);
}

TEST_CASE("Communicator::split groups ranks by colour and orders them by key") {
  const dchag::Communicator world;
  const int p = world.size(), r = world.rank();
  // Even and odd ranks, each group in reverse rank order.
  const dchag::Communicator part = world.split(r % 2, -r);
  CHECK(part.valid());
  CHECK(part.get() != world.get());
  int expected_size = 0, expected_rank = 0;
  for (int q = 0; q < p; ++q) {
    if (q % 2 != r % 2) continue;
    ++expected_size;
    if (q > r) ++expected_rank;
  }
  CHECK(part.size() == expected_size);
  CHECK(part.rank() == expected_rank);

  // Members really are the ranks of the same parity: gather their world ranks.
  std::vector<int> members(part.size());
  MPI_Allgather(&r, 1, MPI_INT, members.data(), 1, MPI_INT, part.get());
  for (int k = 0; k < part.size(); ++k) {
    CHECK(members[k] % 2 == r % 2);
    if (k > 0) CHECK(members[k] < members[k - 1]);
  }
  part.barrier();

  // MPI_UNDEFINED: rank 0 joins no communicator.
  const dchag::Communicator rest = world.split(r == 0 ? MPI_UNDEFINED : 0, r);
  if (r == 0) {
    CHECK_FALSE(rest.valid());
    CHECK_THROWS_WITH_AS(rest.size(), doctest::Contains("no communicator"), dchag::Error);
  } else {
    CHECK(rest.valid());
    CHECK(rest.size() == p - 1);
    CHECK(rest.rank() == r - 1);
  }
}

TEST_CASE("Communicator refuses bad arguments and reports MPI errors as dchag::Error") {
  const dchag::Communicator world;
  CHECK_THROWS_WITH_AS(world.split(-3, 0), doctest::Contains("color -3"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::Communicator(MPI_COMM_NULL), doctest::Contains("MPI_COMM_NULL"),
                       dchag::Error);

  // MPI_ERRORS_RETURN is set on the duplicate: a send to a rank that does not exist comes back
  // as a code, which check_mpi turns into an exception instead of aborting the job.
  int value = 1;
  const int code = MPI_Send(&value, 1, MPI_INT, world.size() + 5, 0, world.get());
  CHECK(code != MPI_SUCCESS);
  CHECK_THROWS_WITH_AS(dchag::Impl::check_mpi(code, "MPI_Send", "test"),
                       doctest::Contains("MPI_Send failed with MPI error"), dchag::Error);
  // The same holds for communicators made by split.
  const dchag::Communicator part = world.split(0, world.rank());
  CHECK(MPI_Send(&value, 1, MPI_INT, part.size() + 5, 0, part.get()) != MPI_SUCCESS);
  world.barrier();
}
