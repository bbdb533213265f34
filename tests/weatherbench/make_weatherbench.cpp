// Writes a small WeatherBench-layout netCDF data set (see weatherbench_writer.hpp):
//   make_weatherbench DIR [height width years times_per_year step_hours]
// defaults 32 64 3 48 6: 2m_temperature, geopotential and temperature at 500 and 850 hPa,
// specific_humidity at 850 hPa, 1979-1981, 12 days a year at 6 h.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "weatherbench_writer.hpp"

int main(int argc, char* argv[]) {
  if (argc != 2 && argc != 7) {
    std::fprintf(stderr, "usage: make_weatherbench DIR [height width years times_per_year "
                         "step_hours]\n");
    return 2;
  }
  const auto arg = [&](int i, int fallback) { return argc == 7 ? std::atoi(argv[i]) : fallback; };
  try {
    wb_test::write_sample_dataset(argv[1], arg(2, 32), arg(3, 64), arg(4, 3), arg(5, 48),
                                  argc == 7 ? std::atof(argv[6]) : 6.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_weatherbench: %s\n", e.what());
    return 1;
  }
  std::printf("wrote a WeatherBench-layout data set to %s\n", argv[1]);
  return 0;
}
