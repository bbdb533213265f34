// Uses the installed headers end to end: MPI + Kokkos start, a GEMM through the library, and a
// check of the result, so a broken package fails here rather than in a user's build.
#include <dchag/dchag.hpp>
#include <mpi.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  int status = 0;
  Kokkos::initialize(argc, argv);
  {
    using Space = Kokkos::DefaultExecutionSpace;
    dchag::View2<double, Space> a("a", 2, 3), b("b", 3, 2), c("c", 2, 2);
    Kokkos::deep_copy(a, 1.0);
    Kokkos::deep_copy(b, 2.0);
    dchag::gemm(Space(), dchag::Op::N, dchag::Op::N, 1.0, a, b, 0.0, c);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), c);
    status = h(1, 1) == 6.0 ? 0 : 1;
    std::printf("dchag consumer on %s: c(1,1) = %g (%s)\n", Space::name(), h(1, 1),
                status == 0 ? "ok" : "WRONG");
#if defined(DCHAG_HAVE_NETCDF)
    // The netCDF reader links and reports a missing file as a dchag::Error.
    try {
      dchag::NetcdfFile f("/nonexistent/consumer.nc");
      status = 1;
    } catch (const dchag::Error&) {
      std::printf("dchag consumer: netCDF reader available\n");
    }
#endif
  }
  Kokkos::finalize();
  MPI_Finalize();
  return status;
}
