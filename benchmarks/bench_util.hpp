#ifndef DCHAG_BENCHMARKS_BENCH_UTIL_HPP
#define DCHAG_BENCHMARKS_BENCH_UTIL_HPP

// Timing and reporting shared by the benchmark programs: best-of-n wall time, a table on
// stdout and the same rows as CSV, and the BLAS line every benchmark starts with (a figure
// measured on generic BLAS kernels says little about the library).

#include <Kokkos_Core.hpp>
#include <dchag/kernels/blas_info.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace dchag_bench {

// Which BLAS runs the GEMMs, and the warning when it runs generic kernels on this CPU.
inline void print_blas() {
  std::fputs(dchag::blas_report().c_str(), stdout);
  std::fflush(stdout);
}

// Best of `reps` runs after one warm-up; fences so device work is included.
template <class ExecSpace, class F>
double best_seconds(const ExecSpace& space, int reps, F&& f) {
  f();
  space.fence();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    space.fence();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;

  void add(std::vector<std::string> row) { rows.push_back(std::move(row)); }

  void print() const {
    std::vector<std::size_t> width(columns.size());
    for (std::size_t c = 0; c < columns.size(); ++c) {
      width[c] = columns[c].size();
      for (auto& r : rows) width[c] = std::max(width[c], r[c].size());
    }
    auto line = [&](const std::vector<std::string>& r) {
      for (std::size_t c = 0; c < r.size(); ++c)
        std::printf(c == 0 ? "%-*s" : "  %*s", int(width[c]), r[c].c_str());
      std::printf("\n");
    };
    line(columns);
    for (auto& r : rows) line(r);
    std::fflush(stdout);
  }

  void write_csv(const std::string& path) const {
    std::ofstream out(path);
    auto line = [&](const std::vector<std::string>& r) {
      for (std::size_t c = 0; c < r.size(); ++c) out << (c ? "," : "") << r[c];
      out << "\n";
    };
    line(columns);
    for (auto& r : rows) line(r);
  }
};

inline std::string fmt(double v, const char* f = "%.2f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace dchag_bench

#endif
