#ifndef DCHAG_IO_WEATHERBENCH_HPP
#define DCHAG_IO_WEATHERBENCH_HPP

// Reanalysis data (ERA5 regridded as in WeatherBench) from netCDF files, with the interface of
// the built-in WeatherGenerator (size, time_index, lead_steps, fill, state, latitudes,
// channel_mean / channel_std, hours_per_step), so a training job can take either.
//
// Layout (WeatherBench 5.625 deg): one folder per variable under the data directory, one file
// per year, the year a `_YYYY_` part of the file name:
//
//   DIR/2m_temperature/2m_temperature_1979_5.625deg.nc   variable t2m[time, lat, lon]
//   DIR/geopotential/geopotential_1979_5.625deg.nc       variable z[time, level, lat, lon]
//
// A channel is named by its folder, plus `_LEVEL` for a variable with a pressure level
// dimension: "2m_temperature", "geopotential_500", "temperature_850". The data variable of a
// file is the one with dimensions time x [level x] lat x lon (the others are coordinates).
//
// Every channel must have the same years, the same time values in each year, the same latitudes
// and longitudes (and, where asked, the model's height and width); times must be evenly spaced.
// Anything else, a missing folder, variable or level, a file netCDF cannot read, and a value
// that is not finite (or equals the variable's _FillValue) where it is read, is a dchag::Error
// naming the file.
//
// Splits by year: Train, Validation and Test are ranges of years (by default the last year is
// Test, the one before it Validation and all earlier ones Train). A sample of a split is an input
// time t of that split whose target t + lead also lies in it, so no target of one split is an
// input or target of another. Lead times are given in hours and converted with the files' time
// spacing (which must divide them).
//
// Normalisation: per channel, the mean and standard deviation of all grid points at all Train
// times, found in one streaming pass and kept in a small CSV file (by default
// DIR/dchag_statistics.csv, one row per channel and Train year range). A later construction
// with the same channels and Train years reads the file instead of passing over the data again;
// rows for other channels or years are kept.
//
// Reading is lazy: construction reads only coordinates, attributes and (when the statistics are
// not yet known) the Train data; fill() and state() read exactly the channels asked for, so a
// rank that owns a few channels never reads the others.

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/io/host_output.hpp>
#include <dchag/io/netcdf_file.hpp>
#include <dchag/io/split.hpp>

namespace dchag {

struct YearRange {
  int first = 0, last = 0;  // inclusive; {0, 0}: the default for its split
  bool contains(int year) const { return year >= first && year <= last; }
};

struct WeatherBenchConfig {
  std::string directory;
  std::vector<std::string> variables;  // channels, e.g. {"geopotential_500", "2m_temperature"}
  double lead_hours = 72;
  int height = 0, width = 0;           // the grid the model expects; 0 accepts the files' grid
  YearRange train_years, validation_years, test_years;
  std::string statistics_file;         // empty: directory/dchag_statistics.csv
  bool compute_statistics = true;      // false: missing statistics are an error, not a pass
  bool normalize = true;               // (raw - mean) / std per channel, or raw values
};

template <class T>
class WeatherBench {
  // Values are computed in double and rounded once into T.
  static_assert(is_model_scalar_v<T>, "WeatherBench<T>: T must be float, double, bf16 or fp16");

 public:
  explicit WeatherBench(WeatherBenchConfig config) : cfg_(std::move(config)) {
    Impl::require(!cfg_.variables.empty(), "WeatherBench: no variables given, expected names "
                  "such as geopotential_500 or 2m_temperature");
    Impl::require(std::isfinite(cfg_.lead_hours) && cfg_.lead_hours > 0,
                  "WeatherBench: lead_hours = ", cfg_.lead_hours, ", expected > 0");
    if (cfg_.statistics_file.empty())
      cfg_.statistics_file =
          (std::filesystem::path(cfg_.directory) / "dchag_statistics.csv").string();
    for (const std::string& v : cfg_.variables) open_channel(v);
    check_times();
    choose_splits();
    statistics();
  }

  const WeatherBenchConfig& config() const { return cfg_; }
  int channels() const { return static_cast<int>(channels_.size()); }
  int height() const { return static_cast<int>(lat_.size()); }
  int width() const { return static_cast<int>(lon_.size()); }
  const std::vector<std::string>& variable_names() const { return cfg_.variables; }
  const std::vector<int>& years() const { return years_; }
  YearRange years_of(Split split) const { return range_[index_of(split)]; }
  double hours_per_step() const { return step_hours_; }
  const std::vector<double>& latitudes() const { return lat_; }
  const std::vector<double>& longitudes() const { return lon_; }
  const std::vector<double>& channel_mean() const { return mean_; }
  const std::vector<double>& channel_std() const { return std_; }
  const std::string& statistics_file() const { return cfg_.statistics_file; }
  bool statistics_computed() const { return computed_; }  // false: read from the file

  std::size_t size(Split split) const {
    const auto& s = span_[index_of(split)];
    return s.second - s.first - std::size_t(lead_steps_);
  }
  int lead_steps(Split, std::size_t) const { return lead_steps_; }

  // The global time index (over all years, in order) of a sample's input.
  std::int64_t time_index(Split split, std::size_t index) const {
    Impl::require(index < size(split), "WeatherBench: ", split_name(split), " index ", index,
                  " out of range, expected < ", size(split));
    return static_cast<std::int64_t>(span_[index_of(split)].first + index);
  }
  // The year a global time index falls in.
  int year_of(std::int64_t time) const { return years_[locate(time).first]; }

  template <class XView, class YView, class LeadView>
  void fill(Split split, const std::vector<std::size_t>& indices, const XView& x, const YView& y,
            const LeadView& lead_time, int channel_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    Impl::check_output_view_type<YView, T>();
    Impl::check_output_view_type<LeadView, T>();
    static_assert(XView::rank == 4 && YView::rank == 4 && LeadView::rank == 1,
                  "WeatherBench::fill: x and y must be rank 4 [B, C, H, W], lead_time rank 1");
    const int nc = static_cast<int>(x.extent(1));
    check_channel_range(channel_begin, channel_begin + nc);
    const std::size_t b = indices.size(), hh = height(), ww = width();
    Impl::require_extents("WeatherBench::fill", x, {b, std::size_t(nc), hh, ww});
    Impl::require_extents("WeatherBench::fill", y, {b, std::size_t(nc), hh, ww});
    Impl::require_extents("WeatherBench::fill", lead_time, {b});
    for (std::size_t i : indices) time_index(split, i);
    const std::size_t block = std::size_t(nc) * hh * ww;
    Impl::write_through_host(x, [&](T* xp) {
      Impl::write_through_host(y, [&](T* yp) {
        Impl::write_through_host(lead_time, [&](T* lp) {
          for (std::size_t k = 0; k < b; ++k) {
            const std::int64_t t = time_index(split, indices[k]);
            read_state(t, channel_begin, nc, xp + k * block);
            read_state(t + lead_steps_, channel_begin, nc, yp + k * block);
            lp[k] = static_cast<T>(lead_steps_ * step_hours_ / 100.0);
          }
        });
      });
    });
  }

  // The state at a global time index into out[C', H, W].
  template <class OutView>
  void state(std::int64_t time, const OutView& out, int channel_begin = 0) const {
    Impl::check_output_view_type<OutView, T>();
    static_assert(OutView::rank == 3, "WeatherBench::state: out must be rank 3 [C, H, W]");
    Impl::require(time >= 0 && time < std::int64_t(total_times_), "WeatherBench::state: time ",
                  time, " out of range, expected 0 <= time < ", total_times_);
    const int nc = static_cast<int>(out.extent(0));
    check_channel_range(channel_begin, channel_begin + nc);
    Impl::require_extents("WeatherBench::state", out,
                          {std::size_t(nc), std::size_t(height()), std::size_t(width())});
    Impl::write_through_host(out, [&](T* p) { read_state(time, channel_begin, nc, p); });
  }

 private:
  struct Source {  // one year of one channel
    std::unique_ptr<NetcdfFile> file;
    NetcdfFile::Variable var;
    std::vector<double> times;  // raw values of the time coordinate
    std::string time_units;
    double scale = 1, offset = 0;
    std::optional<double> fill_value;
  };
  struct Channel {
    std::string name, folder;
    bool has_level = false;
    double level = 0;
    std::size_t level_index = 0;
    std::vector<Source> sources;  // per year, in years_ order
  };

  static int index_of(Split split) {
    return split == Split::Train ? 0 : split == Split::Validation ? 1 : 2;
  }

  void check_channel_range(int begin, int end) const {
    Impl::require(begin >= 0 && begin < end && end <= channels(), "WeatherBench: channel range [",
                  begin, ", ", end, ") invalid, expected 0 <= begin < end <= channels = ",
                  channels());
  }

  // The year in a file name: its last part between underscores (or the extension) that is
  // exactly four digits.
  static std::optional<int> year_in(const std::string& file_name) {
    std::string stem = file_name.substr(0, file_name.size() - 3);  // without ".nc"
    std::optional<int> year;
    std::size_t pos = 0;
    while (pos <= stem.size()) {
      const std::size_t end = std::min(stem.find_first_of("_.", pos), stem.size());
      const std::string part = stem.substr(pos, end - pos);
      if (part.size() == 4 && std::all_of(part.begin(), part.end(), [](char c) {
            return c >= '0' && c <= '9';
          }))
        year = std::stoi(part);
      pos = end + 1;
    }
    return year;
  }

  static bool is_number(const std::string& s) {
    if (s.empty()) return false;
    char* end = nullptr;
    std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  }

  void open_channel(const std::string& name) {
    namespace fs = std::filesystem;
    const fs::path dir(cfg_.directory);
    Impl::require(fs::is_directory(dir), "WeatherBench: data directory '", cfg_.directory,
                  "' does not exist");
    Channel ch;
    ch.name = name;
    ch.folder = name;
    if (!fs::is_directory(dir / name)) {
      const std::size_t cut = name.rfind('_');
      const bool leveled = cut != std::string::npos && is_number(name.substr(cut + 1));
      Impl::require(leveled && fs::is_directory(dir / name.substr(0, cut)), "WeatherBench: no ",
                    "folder for variable '", name, "': expected ", (dir / name).string(),
                    leveled ? " or " + (dir / name.substr(0, cut)).string() : std::string(),
                    " (a folder name, plus _LEVEL for a pressure level)");
      ch.folder = name.substr(0, cut);
      ch.has_level = true;
      ch.level = std::strtod(name.substr(cut + 1).c_str(), nullptr);
    }
    std::map<int, fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir / ch.folder)) {
      const std::string fname = entry.path().filename().string();
      if (fname.size() < 3 || fname.compare(fname.size() - 3, 3, ".nc") != 0) continue;
      const auto year = year_in(fname);
      Impl::require(bool(year), "WeatherBench: cannot tell the year of ", entry.path().string(),
                    ", expected a _YYYY_ part in the file name");
      const auto [at, fresh] = files.emplace(*year, entry.path());
      Impl::require(fresh, "WeatherBench: two files for ", *year, " in ",
                    (dir / ch.folder).string(), ": ", at->second.filename().string(), " and ",
                    fname);
    }
    Impl::require(!files.empty(), "WeatherBench: no .nc files in ", (dir / ch.folder).string(),
                  " (variable '", name, "')");
    std::vector<int> years;
    for (const auto& f : files) years.push_back(f.first);
    if (channels_.empty()) {
      years_ = years;
    } else {
      Impl::require(years == years_, "WeatherBench: variable '", name, "' has the years ",
                    years_text(years), ", but '", channels_[0].name, "' has ", years_text(years_),
                    ": every variable needs the same years");
    }
    for (const auto& f : files) ch.sources.push_back(open_source(ch, f.second.string()));
    channels_.push_back(std::move(ch));
  }

  static std::string years_text(const std::vector<int>& y) {
    std::ostringstream out;
    out << y.front() << "-" << y.back() << " (" << y.size() << " files)";
    return out.str();
  }

  static bool is_lat(const std::string& d) { return d == "lat" || d == "latitude"; }
  static bool is_lon(const std::string& d) { return d == "lon" || d == "longitude"; }

  Source open_source(Channel& ch, const std::string& path) {
    Source s;
    s.file = std::make_unique<NetcdfFile>(path);
    const NetcdfFile& f = *s.file;
    std::vector<std::string> candidates;
    for (const std::string& v : f.variable_names()) {
      const auto info = f.variable(v);
      const auto& d = info.dimensions;
      if ((d.size() == 3 || d.size() == 4) && is_lat(d[d.size() - 2]) && is_lon(d.back()))
        candidates.push_back(v);
    }
    Impl::require(candidates.size() == 1, "WeatherBench: ", path, " has ",
                  candidates.empty() ? "no" : "more than one", " data variable of time x [level x] "
                  "lat x lon", candidates.empty() ? "" : " (" + join(candidates) + ")",
                  "; variables: ", join(f.variable_names()));
    s.var = f.variable(candidates[0]);
    const auto& d = s.var.dimensions;
    const bool leveled = d.size() == 4;
    Impl::require(leveled == ch.has_level, "WeatherBench: variable '", ch.name, "': ",
                  s.var.name, " in ", path,
                  leveled ? " has a level dimension '" + d[1] + "', expected a name with _LEVEL, "
                            "e.g. " + ch.folder + "_500"
                          : " has no level dimension, expected the name " + ch.folder);
    // Coordinates.
    for (const std::string& c : d)
      Impl::require(f.has_variable(c), "WeatherBench: ", path, " has no coordinate variable '", c,
                    "' for the dimension of ", s.var.name);
    s.times = f.read_all(d[0]);
    s.time_units = f.text_attribute(d[0], "units").value_or("");
    Impl::require(!s.times.empty(), "WeatherBench: ", path, " has no times");
    if (leveled) {
      const std::vector<double> levels = f.read_all(d[1]);
      std::size_t k = 0;
      while (k < levels.size() && std::abs(levels[k] - ch.level) > 1e-6) ++k;
      std::ostringstream have;
      for (double l : levels) have << (have.tellp() > 0 ? ", " : "") << l;
      Impl::require(k < levels.size(), "WeatherBench: variable '", ch.name, "': ", path,
                    " has no level ", ch.level, " (levels: ", have.str(), ")");
      if (!ch.sources.empty())
        Impl::require(k == ch.level_index, "WeatherBench: the levels of ", path,
                      " are not in the order of the first year's file");
      ch.level_index = k;
    }
    const std::vector<double> lat = f.read_all(d[d.size() - 2]), lon = f.read_all(d.back());
    if (lat_.empty()) {
      lat_ = lat;
      lon_ = lon;
      grid_file_ = path;
      Impl::require(cfg_.height == 0 || int(lat.size()) == cfg_.height, "WeatherBench: ", path,
                    " has ", lat.size(), " latitudes, expected the model's height ", cfg_.height);
      Impl::require(cfg_.width == 0 || int(lon.size()) == cfg_.width, "WeatherBench: ", path,
                    " has ", lon.size(), " longitudes, expected the model's width ", cfg_.width);
    } else {
      const bool same = lat.size() == lat_.size() && lon.size() == lon_.size() &&
                        std::equal(lat.begin(), lat.end(), lat_.begin(), close) &&
                        std::equal(lon.begin(), lon.end(), lon_.begin(), close);
      Impl::require(same, "WeatherBench: the grid of ", path, " (", lat.size(), " x ", lon.size(),
                    ") differs from that of ", grid_file_, " (", lat_.size(), " x ", lon_.size(),
                    "): every variable must be on the same latitudes and longitudes");
    }
    s.scale = f.number_attribute(s.var.name, "scale_factor").value_or(1.0);
    s.offset = f.number_attribute(s.var.name, "add_offset").value_or(0.0);
    s.fill_value = f.number_attribute(s.var.name, "_FillValue");
    if (!s.fill_value) s.fill_value = f.number_attribute(s.var.name, "missing_value");
    // Without an attribute, netCDF's default fill value marks data never written, which is
    // also what a truncated classic-format file reads as past its end.
    if (!s.fill_value && s.var.type == NC_FLOAT) s.fill_value = double(NC_FILL_FLOAT);
    if (!s.fill_value && s.var.type == NC_DOUBLE) s.fill_value = double(float(NC_FILL_DOUBLE));
    return s;
  }

  static bool close(double a, double b) { return std::abs(a - b) <= 1e-6 * (1 + std::abs(a)); }

  static double hours_per_unit(const std::string& units, const std::string& path) {
    const std::string word = units.substr(0, units.find(' '));
    if (word == "hours" || word == "hour" || word == "h") return 1.0;
    if (word == "days" || word == "day") return 24.0;
    if (word == "minutes" || word == "minute") return 1.0 / 60;
    if (word == "seconds" || word == "second" || word == "s") return 1.0 / 3600;
    throw Error(Impl::concat("WeatherBench: the time units '", units, "' of ", path,
                             " are not hours, days, minutes or seconds since a date"));
  }

  void check_times() {
    const Channel& ref = channels_[0];
    step_hours_ = 0;
    for (std::size_t y = 0; y < years_.size(); ++y) {
      const Source& r = ref.sources[y];
      const double unit = hours_per_unit(r.time_units, r.file->path());
      for (const Channel& ch : channels_) {
        const Source& s = ch.sources[y];
        Impl::require(s.times.size() == r.times.size() && s.time_units == r.time_units &&
                          std::equal(s.times.begin(), s.times.end(), r.times.begin()),
                      "WeatherBench: the times of ", s.file->path(), " (", s.times.size(),
                      " times, '", s.time_units, "') differ from those of ", r.file->path(), " (",
                      r.times.size(), " times, '", r.time_units,
                      "'): every variable needs the same times");
      }
      for (std::size_t k = 1; k < r.times.size(); ++k) {
        const double dt = (r.times[k] - r.times[k - 1]) * unit;
        if (step_hours_ == 0) step_hours_ = dt;
        Impl::require(dt > 0 && close(dt, step_hours_), "WeatherBench: the times of ",
                      r.file->path(), " are not evenly spaced: ", dt, " h between times ", k - 1,
                      " and ", k, ", expected ", step_hours_, " h");
      }
      // Consecutive years continue the same axis (checked where both use the same epoch).
      if (y > 0 && ref.sources[y - 1].time_units == r.time_units && step_hours_ > 0) {
        const double gap = (r.times.front() - ref.sources[y - 1].times.back()) * unit;
        Impl::require(close(gap, step_hours_), "WeatherBench: ", r.file->path(), " starts ", gap,
                      " h after the end of ", ref.sources[y - 1].file->path(), ", expected ",
                      step_hours_, " h (a gap or an overlap in the time axis)");
      }
    }
    Impl::require(step_hours_ > 0, "WeatherBench: every file holds a single time, expected at "
                  "least two to know the time step");
    const double steps = cfg_.lead_hours / step_hours_;
    Impl::require(std::abs(steps - std::round(steps)) < 1e-9 && std::round(steps) >= 1,
                  "WeatherBench: lead_hours = ", cfg_.lead_hours, " is not a whole number of the "
                  "data's time steps of ", step_hours_, " h");
    lead_steps_ = static_cast<int>(std::round(steps));
    begin_.assign(1, 0);
    for (const Source& s : ref.sources) begin_.push_back(begin_.back() + s.times.size());
    total_times_ = begin_.back();
  }

  void choose_splits() {
    const int n = static_cast<int>(years_.size());
    YearRange tr = cfg_.train_years, va = cfg_.validation_years, te = cfg_.test_years;
    const bool defaults = tr.first == 0 && va.first == 0 && te.first == 0 && tr.last == 0 &&
                          va.last == 0 && te.last == 0;
    if (defaults) {
      Impl::require(n >= 3, "WeatherBench: ", n, " years of data (", years_text(years_),
                    "), expected at least 3 for the default split (Train, then one Validation "
                    "and one Test year) or explicit year ranges");
      tr = {years_.front(), years_[n - 3]};
      va = {years_[n - 2], years_[n - 2]};
      te = {years_[n - 1], years_[n - 1]};
    }
    range_ = {tr, va, te};
    const char* names[3] = {"train", "validation", "test"};
    for (int s = 0; s < 3; ++s) {
      const YearRange r = range_[s];
      Impl::require(r.first <= r.last && std::count(years_.begin(), years_.end(), r.first) &&
                        std::count(years_.begin(), years_.end(), r.last),
                    "WeatherBench: ", names[s], " years ", r.first, "-", r.last,
                    " invalid, expected a range of the years present (", years_text(years_), ")");
      for (int o = 0; o < s; ++o)
        Impl::require(r.last < range_[o].first || r.first > range_[o].last, "WeatherBench: ",
                      names[s], " years ", r.first, "-", r.last, " overlap the ", names[o],
                      " years ", range_[o].first, "-", range_[o].last);
      const std::size_t a = std::find(years_.begin(), years_.end(), r.first) - years_.begin();
      const std::size_t b = std::find(years_.begin(), years_.end(), r.last) - years_.begin();
      span_[s] = {begin_[a], begin_[b + 1]};
      Impl::require(span_[s].second - span_[s].first > std::size_t(lead_steps_),
                    "WeatherBench: the ", names[s], " years ", r.first, "-", r.last, " hold ",
                    span_[s].second - span_[s].first, " times, too few for a lead of ",
                    lead_steps_, " steps (", cfg_.lead_hours, " h)");
    }
  }

  // (year position, time within that year's file) of a global time index.
  std::pair<std::size_t, std::size_t> locate(std::int64_t time) const {
    const auto it = std::upper_bound(begin_.begin(), begin_.end(), std::size_t(time));
    const std::size_t y = static_cast<std::size_t>(it - begin_.begin()) - 1;
    return {y, std::size_t(time) - begin_[y]};
  }

  // One channel's raw field at a global time into buf[H x W], every value checked.
  void read_raw(int c, std::int64_t time, std::vector<float>& buf) const {
    const Channel& ch = channels_[c];
    const auto [y, k] = locate(time);
    const Source& s = ch.sources[y];
    buf.resize(std::size_t(height()) * width());
    std::vector<std::size_t> start(s.var.shape.size(), 0), count = s.var.shape;
    start[0] = k;
    count[0] = 1;
    if (ch.has_level) {
      start[1] = ch.level_index;
      count[1] = 1;
    }
    s.file->read(s.var, start, count, buf.data());
    for (std::size_t p = 0; p < buf.size(); ++p) {
      const float v = buf[p];
      Impl::require(std::isfinite(v) && !(s.fill_value && double(v) == *s.fill_value),
                    "WeatherBench: ", s.var.name, " in ", s.file->path(), " at time ", k,
                    ch.has_level ? Impl::concat(", level ", ch.level) : std::string(),
                    ", point ", p, " is ", v,
                    std::isfinite(v) ? " (the fill value: missing or never written data, or a "
                                       "truncated file)"
                                     : "",
                    ", expected a finite value");
      if (s.scale != 1.0 || s.offset != 0.0) buf[p] = float(v * s.scale + s.offset);
    }
  }

  void read_state(std::int64_t time, int c0, int nc, T* out) const {
    std::vector<float> buf;
    const std::size_t np = std::size_t(height()) * width();
    for (int ci = 0; ci < nc; ++ci) {
      const int c = c0 + ci;
      read_raw(c, time, buf);
      T* o = out + std::size_t(ci) * np;
      if (cfg_.normalize) {
        const double m = mean_[c], inv = 1.0 / std_[c];
        for (std::size_t p = 0; p < np; ++p) o[p] = static_cast<T>((buf[p] - m) * inv);
      } else {
        for (std::size_t p = 0; p < np; ++p) o[p] = static_cast<T>(buf[p]);
      }
    }
  }

  // ---- normalisation statistics ------------------------------------------------------------

  struct Stat {
    double count = 0, mean = 0, std = 0;
  };

  std::string stat_key(const std::string& name) const {
    return Impl::concat(name, ",", range_[0].first, ",", range_[0].last);
  }

  std::map<std::string, Stat> read_statistics_file() const {
    std::map<std::string, Stat> rows;
    std::ifstream in(cfg_.statistics_file);
    if (!in) return rows;
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty() || line[0] == '#' || line.rfind("variable,", 0) == 0) continue;
      std::istringstream fields(line);
      std::string name, first, last, count, mean, sd;
      const bool ok = std::getline(fields, name, ',') && std::getline(fields, first, ',') &&
                      std::getline(fields, last, ',') && std::getline(fields, count, ',') &&
                      std::getline(fields, mean, ',') && std::getline(fields, sd) &&
                      is_number(count) && is_number(mean) && is_number(sd);
      Impl::require(ok, "WeatherBench: line ", number, " of the statistics file ",
                    cfg_.statistics_file, " is not 'variable,train_first_year,train_last_year,"
                    "count,mean,std': ", line, " (delete the file to recompute it)");
      rows[name + "," + first + "," + last] = {std::stod(count), std::stod(mean), std::stod(sd)};
    }
    return rows;
  }

  void write_statistics_file(const std::map<std::string, Stat>& rows) const {
    namespace fs = std::filesystem;
    // Written beside the target and renamed over it: a reader never sees half a file.
    const std::string tmp =
        cfg_.statistics_file + ".tmp" + std::to_string(std::random_device{}());
    {
      std::ofstream out(tmp);
      out << "# per-variable mean and standard deviation over all grid points of the Train years\n"
             "variable,train_first_year,train_last_year,count,mean,std\n";
      char buf[128];
      for (const auto& [key, s] : rows) {
        std::snprintf(buf, sizeof buf, ",%.17g,%.17g,%.17g\n", s.count, s.mean, s.std);
        out << key << buf;
      }
      out.close();
      Impl::require(bool(out), "WeatherBench: cannot write the statistics file ", tmp,
                    " (give a writable statistics_file)");
    }
    std::error_code ec;
    fs::rename(tmp, cfg_.statistics_file, ec);
    if (ec) fs::remove(tmp);
    Impl::require(!ec, "WeatherBench: cannot write the statistics file ", cfg_.statistics_file,
                  ": ", ec.message());
  }

  // One pass over the Train times of a channel: per-time mean and sum of squared deviations,
  // merged (Chan et al.) so that large offsets such as geopotential lose no precision.
  Stat compute_statistics(int c) const {
    Stat s;
    double m2 = 0;
    std::vector<float> buf;
    for (std::size_t t = span_[0].first; t < span_[0].second; ++t) {
      read_raw(c, std::int64_t(t), buf);
      double mb = 0;
      for (float v : buf) mb += v;
      mb /= double(buf.size());
      double q = 0;
      for (float v : buf) q += (v - mb) * (v - mb);
      const double nb = double(buf.size()), n = s.count + nb, d = mb - s.mean;
      s.mean += d * nb / n;
      m2 += q + d * d * s.count * nb / n;
      s.count = n;
    }
    s.std = std::sqrt(m2 / s.count);
    return s;
  }

  void statistics() {
    std::map<std::string, Stat> rows = read_statistics_file();
    computed_ = false;
    for (int c = 0; c < channels(); ++c) {
      const std::string key = stat_key(channels_[c].name);
      if (rows.count(key)) continue;
      Impl::require(cfg_.compute_statistics, "WeatherBench: the statistics file ",
                    cfg_.statistics_file, " has no row for ", channels_[c].name, " over the Train "
                    "years ", range_[0].first, "-", range_[0].last);
      rows[key] = compute_statistics(c);
      computed_ = true;
    }
    if (computed_) write_statistics_file(rows);
    for (int c = 0; c < channels(); ++c) {
      const Stat& s = rows[stat_key(channels_[c].name)];
      Impl::require(std::isfinite(s.mean) && std::isfinite(s.std) && s.std > 0,
                    "WeatherBench: variable '", channels_[c].name, "' has mean ", s.mean,
                    " and standard deviation ", s.std, " over the Train years (",
                    cfg_.statistics_file, "), expected finite and a std > 0");
      mean_.push_back(s.mean);
      std_.push_back(s.std);
    }
  }

  WeatherBenchConfig cfg_;
  std::vector<Channel> channels_;
  std::vector<int> years_;
  std::vector<double> lat_, lon_;
  std::string grid_file_;
  double step_hours_ = 0;
  int lead_steps_ = 0;
  std::vector<std::size_t> begin_;  // global time index of each year's first time, + the total
  std::size_t total_times_ = 0;
  std::vector<YearRange> range_;
  std::pair<std::size_t, std::size_t> span_[3];  // [first, end) global times per split
  std::vector<double> mean_, std_;
  bool computed_ = false;
};

}  // namespace dchag

#endif
