#ifndef DCHAG_TESTS_WEATHERBENCH_WRITER_HPP
#define DCHAG_TESTS_WEATHERBENCH_WRITER_HPP

// Writes small data sets in the WeatherBench layout with the netCDF C API directly (not through
// the reader under test): DIR/<folder>/<folder>_<year>_test.nc holding one variable of
// time x [level x] lat x lon, with coordinate variables and "hours since 1979-01-01" times.

#include <netcdf.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace wb_test {

inline void nc_ok(int status, const std::string& what) {
  if (status != NC_NOERR) throw std::runtime_error(what + ": " + nc_strerror(status));
}

struct Grid {
  std::vector<double> lat, lon;
};

// The WeatherBench 5.625 deg layout at any size: latitudes centred in equal bands, south first.
inline Grid grid(int height, int width) {
  Grid g;
  for (int i = 0; i < height; ++i) g.lat.push_back(-90.0 + 180.0 / height * (i + 0.5));
  for (int j = 0; j < width; ++j) g.lon.push_back(360.0 / width * j);
  return g;
}

// value(time_hours, level, i, j) for every time, level (none: levels empty) and grid point.
using Field = std::function<float(double, double, int, int)>;

struct FileSpec {
  std::string var;                // the netCDF variable name, e.g. "t2m"
  std::vector<double> levels;     // empty: no level dimension
  std::vector<double> times;      // hours since 1979-01-01
  Grid grid;
  Field value;
  int format = NC_NETCDF4;        // or NC_CLASSIC_MODEL / 0 (classic)
  std::string time_units = "hours since 1979-01-01";
};

inline void write_file(const std::string& path, const FileSpec& s) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  int nc = 0;
  nc_ok(nc_create(path.c_str(), NC_CLOBBER | s.format, &nc), "create " + path);
  const bool leveled = !s.levels.empty();
  int dt, dl = -1, dy, dx;
  nc_ok(nc_def_dim(nc, "time", s.times.size(), &dt), "time dim");
  if (leveled) nc_ok(nc_def_dim(nc, "level", s.levels.size(), &dl), "level dim");
  nc_ok(nc_def_dim(nc, "lat", s.grid.lat.size(), &dy), "lat dim");
  nc_ok(nc_def_dim(nc, "lon", s.grid.lon.size(), &dx), "lon dim");
  int vt, vl = -1, vy, vx, vv;
  nc_ok(nc_def_var(nc, "time", NC_DOUBLE, 1, &dt, &vt), "time var");
  nc_ok(nc_put_att_text(nc, vt, "units", s.time_units.size(), s.time_units.c_str()), "units");
  if (leveled) nc_ok(nc_def_var(nc, "level", NC_DOUBLE, 1, &dl, &vl), "level var");
  nc_ok(nc_def_var(nc, "lat", NC_DOUBLE, 1, &dy, &vy), "lat var");
  nc_ok(nc_def_var(nc, "lon", NC_DOUBLE, 1, &dx, &vx), "lon var");
  std::vector<int> dims{dt};
  if (leveled) dims.push_back(dl);
  dims.push_back(dy);
  dims.push_back(dx);
  nc_ok(nc_def_var(nc, s.var.c_str(), NC_FLOAT, int(dims.size()), dims.data(), &vv), "data var");
  nc_ok(nc_enddef(nc), "enddef");
  nc_ok(nc_put_var_double(nc, vt, s.times.data()), "times");
  if (leveled) nc_ok(nc_put_var_double(nc, vl, s.levels.data()), "levels");
  nc_ok(nc_put_var_double(nc, vy, s.grid.lat.data()), "lat");
  nc_ok(nc_put_var_double(nc, vx, s.grid.lon.data()), "lon");
  const std::size_t nl = leveled ? s.levels.size() : 1, ny = s.grid.lat.size(),
                    nx = s.grid.lon.size();
  std::vector<float> data;
  data.reserve(s.times.size() * nl * ny * nx);
  for (double t : s.times)
    for (std::size_t l = 0; l < nl; ++l)
      for (std::size_t i = 0; i < ny; ++i)
        for (std::size_t j = 0; j < nx; ++j)
          data.push_back(s.value(t, leveled ? s.levels[l] : 0.0, int(i), int(j)));
  nc_ok(nc_put_var_float(nc, vv, data.data()), "data");
  nc_ok(nc_close(nc), "close " + path);
}

// The times of one year at `step` hours, `count` of them, as hours since 1979-01-01 (years of
// 365 days: the reader only needs consecutive files to continue the axis).
inline std::vector<double> year_times(int year, int count, double step) {
  std::vector<double> t;
  const double start = (year - 1979) * double(count) * step;
  for (int k = 0; k < count; ++k) t.push_back(start + k * step);
  return t;
}

// Smooth, travelling fields with very different offsets and scales per variable, so that a
// mix-up of variables, levels, times or axes shows.
inline float sample_field(int variable, double hours, double level, int i, int j) {
  const double phase = 0.07 * hours + 0.9 * variable;
  const double v = std::sin(0.4 * i + 0.3 * variable) * std::cos(0.5 * j - phase) +
                   0.3 * std::sin(0.11 * hours + i * 0.2) + 0.002 * level;
  const double offset[] = {280.0, 5.0e4, -3.0, 0.01};
  const double scale[] = {10.0, 600.0, 2.0, 0.004};
  return float(offset[variable % 4] + scale[variable % 4] * v);
}

// The data set the examples and tests train on: 2m_temperature (t2m), geopotential (z at 500
// and 850) and temperature (t at 850), `years` years from 1979 of `per_year` times `step` hours
// apart.
inline void write_sample_dataset(const std::string& dir, int height, int width, int years,
                                 int per_year, double step) {
  const Grid g = grid(height, width);
  struct V {
    const char* folder;
    const char* var;
    std::vector<double> levels;
    int id;
  };
  const std::vector<V> vars = {{"2m_temperature", "t2m", {}, 0},
                               {"geopotential", "z", {500, 850}, 1},
                               {"temperature", "t", {500, 850}, 2},
                               {"specific_humidity", "q", {850}, 3}};
  for (const V& v : vars)
    for (int y = 1979; y < 1979 + years; ++y) {
      FileSpec s;
      s.var = v.var;
      s.levels = v.levels;
      s.times = year_times(y, per_year, step);
      s.grid = g;
      const int id = v.id;
      s.value = [id](double t, double l, int i, int j) { return sample_field(id, t, l, i, j); };
      write_file(dir + "/" + v.folder + "/" + v.folder + "_" + std::to_string(y) + "_test.nc", s);
    }
}

}  // namespace wb_test

#endif
