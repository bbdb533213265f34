#ifndef DCHAG_EXAMPLES_DATA_SOURCE_HPP
#define DCHAG_EXAMPLES_DATA_SOURCE_HPP

// Where the main job's samples come from: the built-in synthetic weather (the default) or a
// WeatherBench-layout netCDF data set (--data DIR --variables v1,v2,...; needs the netCDF
// library at build time). Both offer the interface the job uses (size, time_index, lead_steps,
// fill, state, latitudes, channel_std, hours_per_step), so the job is a template over them.

#include <dchag/dchag.hpp>

#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "example_main.hpp"

namespace dchag_example {

struct DataOptions {
  std::string dir;                     // empty: the built-in weather
  std::vector<std::string> variables;  // with dir: the channels, in order
  double lead_hours = 72;
  std::string statistics;              // empty: DIR/dchag_statistics.csv
  std::string train_years, validation_years, test_years;  // "1979-2015"; empty: the defaults
};

inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Consumes a data option (returning true), or leaves `a` to the caller.
template <class Value>
bool parse_data_option(const char* program, const std::string& a, Value&& value, DataOptions& d) {
  if (a == "--data") {
    d.dir = value();
  } else if (a == "--variables") {
    d.variables = split_list(value());
    dchag::Impl::require(!d.variables.empty(), program, ": --variables needs names such as "
                         "geopotential_500,temperature_850,2m_temperature");
  } else if (a == "--lead-hours") {
    d.lead_hours = parse_real(program, a, value(), 0.0, false);
  } else if (a == "--statistics") {
    d.statistics = value();
  } else if (a == "--train-years") {
    d.train_years = value();
  } else if (a == "--validation-years") {
    d.validation_years = value();
  } else if (a == "--test-years") {
    d.test_years = value();
  } else {
    return false;
  }
  return true;
}

// The model's channels follow --variables; the options that only mean something for one source
// are refused for the other.
template <class Options>
void finish_data_options(const char* program, Options& o) {
  const DataOptions& d = o.data;
  const auto& given = o.given;
  if (d.dir.empty()) {
    for (const char* flag : {"--variables", "--lead-hours", "--statistics", "--train-years",
                             "--validation-years", "--test-years"})
      dchag::Impl::require(!given.count(flag), program, ": ", flag, " needs --data DIR");
    return;
  }
#if !defined(DCHAG_HAVE_NETCDF)
  throw dchag::Error(std::string(program) + ": --data needs the netCDF library, which this build "
                     "did not find (scripts/install_deps.sh installs libnetcdf-dev; reconfigure)");
#endif
  dchag::Impl::require(!d.variables.empty(), program, ": --data needs --variables, e.g. "
                       "--variables geopotential_500,temperature_850,2m_temperature");
  dchag::Impl::require(!given.count("--lead-steps"), program, ": with --data the lead is "
                       "--lead-hours H (the files' time step converts it), not --lead-steps");
  const int n = static_cast<int>(d.variables.size());
  dchag::Impl::require(!given.count("--channels") || o.model.channels == n, program,
                       ": --channels ", o.model.channels, " but --variables names ", n);
  o.model.channels = n;
}

#if defined(DCHAG_HAVE_NETCDF)
inline dchag::YearRange parse_years(const char* program, const char* option,
                                    const std::string& text) {
  dchag::YearRange r;
  if (text.empty()) return r;
  const auto dash = text.find('-');
  const std::string a = text.substr(0, dash);
  const std::string b = dash == std::string::npos ? a : text.substr(dash + 1);
  r.first = parse_int(program, option, a, 1);
  r.last = parse_int(program, option, b, 1);
  return r;
}
#endif

// Calls f(data) with the source the options name. The WeatherBench statistics are computed (or
// read) by rank 0 first and then read by the others, so one pass over the data serves all.
template <class T, class F>
int with_data(const char* program, const dchag::Communicator& world, const DataOptions& d,
              const dchag::ModelConfig& mc, int lead_steps, F&& f) {
  if (d.dir.empty()) {
    dchag::WeatherConfig wc;
    wc.channels = mc.channels;
    wc.height = mc.height;
    wc.width = mc.width;
    wc.seed = mc.seed + 1;
    wc.lead_time = lead_steps;
    const dchag::WeatherGenerator<T> data(wc);
    return f(data);
  }
#if defined(DCHAG_HAVE_NETCDF)
  dchag::WeatherBenchConfig cfg;
  cfg.directory = d.dir;
  cfg.variables = d.variables;
  cfg.lead_hours = d.lead_hours;
  cfg.height = mc.height;
  cfg.width = mc.width;
  cfg.statistics_file = d.statistics;
  std::optional<dchag::WeatherBench<T>> data;
  dchag::on_every_rank(world, [&] {
    cfg.train_years = parse_years(program, "--train-years", d.train_years);
    cfg.validation_years = parse_years(program, "--validation-years", d.validation_years);
    cfg.test_years = parse_years(program, "--test-years", d.test_years);
    if (world.rank() == 0) data.emplace(cfg);
  });
  dchag::on_every_rank(world, [&] {
    if (world.rank() == 0) return;
    cfg.compute_statistics = false;
    data.emplace(cfg);
  });
  if (world.rank() == 0) {
    const auto& w = *data;
    std::printf("data: %s, %d variables, %d x %d grid, %g h steps, years %d-%d (train %d-%d, "
                "validation %d-%d, test %d-%d); statistics %s %s\n",
                d.dir.c_str(), w.channels(), w.height(), w.width(), w.hours_per_step(),
                w.years().front(), w.years().back(), w.years_of(dchag::Split::Train).first,
                w.years_of(dchag::Split::Train).last, w.years_of(dchag::Split::Validation).first,
                w.years_of(dchag::Split::Validation).last, w.years_of(dchag::Split::Test).first,
                w.years_of(dchag::Split::Test).last,
                w.statistics_computed() ? "computed into" : "read from",
                w.statistics_file().c_str());
  }
  return f(*data);
#else
  (void)program, (void)world, (void)mc;
  throw dchag::Error("--data needs the netCDF library");
#endif
}

}  // namespace dchag_example

#endif
