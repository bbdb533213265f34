// One main for every test executable: MPI and Kokkos live for the whole run, doctest runs the
// cases, and the exit code is the worst over all ranks. Ranks other than 0 stay quiet unless
// something failed on them.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <iostream>
#include <sstream>

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int result = 0;
  Kokkos::initialize(argc, argv);
  {
    doctest::Context context(argc, argv);
    std::ostringstream quiet;
    if (rank != 0) context.setCout(&quiet);
    result = context.run();
    if (result != 0 && rank != 0) std::cerr << "[rank " << rank << "]\n" << quiet.str();
    if (context.shouldExit()) {
      Kokkos::finalize();
      MPI_Finalize();
      return result;
    }
  }
  Kokkos::finalize();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
