#include <dchag/kernels/blas_info.hpp>
#include <dchag/kernels/gemm.hpp>

#include "test_common.hpp"

TEST_CASE("blas_description names a BLAS and the CPU in one line") {
  const std::string d = dchag::blas_description();
  CHECK(!d.empty());
  CHECK(d.find('\n') == std::string::npos);
  CHECK(d.find("CPU: ") != std::string::npos);
  // The tests link Kokkos Kernels with its BLAS TPL, so sgemm_ is in the process.
  CHECK(d.find("no BLAS found") == std::string::npos);
  // Whatever the machine, the warning is the pure function's answer for it.
  CHECK(dchag::blas_warning() ==
        dchag::Impl::blas_warning_for(dchag::Impl::openblas_corename(), dchag::Impl::cpu_features()));
}

TEST_CASE("blas_warning_for: generic OpenBLAS kernels on a CPU with AVX2 or AVX-512") {
  using dchag::Impl::blas_warning_for;
  // The case that motivated it: a recent Intel core that OpenBLAS 0.3.21 does not know.
  const std::string w = blas_warning_for("Prescott", "avx avx2 fma avx512f");
  CHECK(w.find("Prescott") != std::string::npos);
  CHECK(w.find("AVX-512") != std::string::npos);
  CHECK(w.find("OPENBLAS_CORETYPE") == std::string::npos);  // never advise forcing a core
  CHECK(blas_warning_for("Core2", "avx avx2").find("AVX2") != std::string::npos);
  CHECK(!blas_warning_for("generic", "avx2").empty());
  CHECK(!blas_warning_for("SANDYBRIDGE", "AVX2").empty());  // names compared case-insensitively
  CHECK(!blas_warning_for("Nehalem", "avx512f").empty());

  // No warning: kernels that use the vector units, a CPU without AVX2, or not OpenBLAS.
  CHECK(blas_warning_for("Haswell", "avx avx2 fma").empty());
  CHECK(blas_warning_for("SkylakeX", "avx avx2 fma avx512f").empty());
  CHECK(blas_warning_for("Zen", "avx avx2 fma").empty());
  CHECK(blas_warning_for("Prescott", "avx").empty());
  CHECK(blas_warning_for("Prescott", "").empty());
  CHECK(blas_warning_for("", "avx avx2 avx512f").empty());
  // Whole words only: "avx2x" or "noavx2" are not AVX2.
  CHECK(blas_warning_for("Prescott", "avx2x noavx2").empty());
}

TEST_CASE("cpu_features lists known feature words only") {
  for (const auto& f : dchag::Impl::split_words(dchag::Impl::cpu_features()))
    CHECK((f == "avx" || f == "avx2" || f == "fma" || f == "avx512f"));
}
