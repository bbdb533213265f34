#ifndef DCHAG_IO_NETCDF_FILE_HPP
#define DCHAG_IO_NETCDF_FILE_HPP

// A netCDF file opened for reading, closed when the object goes (move-only), with every call of
// the netCDF C library checked: a failure becomes a dchag::Error naming the file, what was being
// done and the library's own message. Needs the netCDF C library (the CMake target
// dchag::netcdf, which also defines DCHAG_HAVE_NETCDF).

#include <netcdf.h>

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>

namespace dchag {

class NetcdfFile {
 public:
  struct Variable {
    std::string name;
    int id = -1;
    nc_type type = NC_NAT;
    std::vector<std::string> dimensions;  // slowest first, as in the file
    std::vector<std::size_t> shape;
  };

  explicit NetcdfFile(std::string path) : path_(std::move(path)) {
    const int status = nc_open(path_.c_str(), NC_NOWRITE, &id_);
    Impl::require(status == NC_NOERR, "dchag::NetcdfFile: cannot open '", path_, "': ",
                  nc_strerror(status), " (missing, truncated or not a netCDF file)");
  }
  NetcdfFile(const NetcdfFile&) = delete;
  NetcdfFile& operator=(const NetcdfFile&) = delete;
  NetcdfFile(NetcdfFile&& other) noexcept
      : path_(std::move(other.path_)), id_(std::exchange(other.id_, -1)) {}
  NetcdfFile& operator=(NetcdfFile&& other) noexcept {
    if (this != &other) {
      close();
      path_ = std::move(other.path_);
      id_ = std::exchange(other.id_, -1);
    }
    return *this;
  }
  ~NetcdfFile() { close(); }

  const std::string& path() const { return path_; }

  std::vector<std::string> variable_names() const {
    int n = 0;
    check(nc_inq_nvars(id_, &n), "count the variables");
    std::vector<std::string> names(n);
    for (int v = 0; v < n; ++v) names[v] = variable_name(v);
    return names;
  }

  bool has_variable(const std::string& name) const {
    int v = 0;
    return nc_inq_varid(id_, name.c_str(), &v) == NC_NOERR;
  }

  Variable variable(const std::string& name) const {
    Variable out;
    out.name = name;
    check(nc_inq_varid(id_, name.c_str(), &out.id), "find variable '" + name + "'");
    int ndims = 0;
    check(nc_inq_var(id_, out.id, nullptr, &out.type, &ndims, nullptr, nullptr),
          "inquire variable '" + name + "'");
    std::vector<int> dims(ndims);
    if (ndims > 0)
      check(nc_inq_vardimid(id_, out.id, dims.data()), "inquire the dimensions of '" + name + "'");
    for (int d : dims) {
      char dname[NC_MAX_NAME + 1] = {};
      std::size_t len = 0;
      check(nc_inq_dim(id_, d, dname, &len), "inquire a dimension of '" + name + "'");
      out.dimensions.emplace_back(dname);
      out.shape.push_back(len);
    }
    return out;
  }

  // The whole variable, converted to double (coordinates: time, latitude, level, ...).
  std::vector<double> read_all(const std::string& name) const {
    const Variable v = variable(name);
    std::size_t n = 1;
    for (std::size_t s : v.shape) n *= s;
    std::vector<double> out(n);
    if (n > 0) check(nc_get_var_double(id_, v.id, out.data()), "read variable '" + name + "'");
    return out;
  }

  // The hyperslab start[d] .. start[d] + count[d] of a variable, converted to float, into out
  // (row-major in the file's dimension order).
  void read(const Variable& v, const std::vector<std::size_t>& start,
            const std::vector<std::size_t>& count, float* out) const {
    Impl::require(start.size() == v.shape.size() && count.size() == v.shape.size(),
                  "dchag::NetcdfFile: reading '", v.name, "' of ", path_, " with ", start.size(),
                  " start and ", count.size(), " count indices, expected ", v.shape.size());
    check(nc_get_vara_float(id_, v.id, start.data(), count.data(), out),
          "read variable '" + v.name + "'");
  }

  std::optional<std::string> text_attribute(const std::string& var, const std::string& att) const {
    int vid = NC_GLOBAL;
    if (!var.empty()) check(nc_inq_varid(id_, var.c_str(), &vid), "find variable '" + var + "'");
    nc_type type = NC_NAT;
    std::size_t len = 0;
    if (nc_inq_att(id_, vid, att.c_str(), &type, &len) != NC_NOERR) return std::nullopt;
    Impl::require(type == NC_CHAR, "dchag::NetcdfFile: attribute ", var, ":", att, " of ", path_,
                  " is not text");
    std::string out(len, '\0');
    if (len > 0) check(nc_get_att_text(id_, vid, att.c_str(), &out[0]), "read attribute " + att);
    while (!out.empty() && out.back() == '\0') out.pop_back();
    return out;
  }

  std::optional<double> number_attribute(const std::string& var, const std::string& att) const {
    int vid = NC_GLOBAL;
    if (!var.empty()) check(nc_inq_varid(id_, var.c_str(), &vid), "find variable '" + var + "'");
    nc_type type = NC_NAT;
    std::size_t len = 0;
    if (nc_inq_att(id_, vid, att.c_str(), &type, &len) != NC_NOERR) return std::nullopt;
    Impl::require(type != NC_CHAR && type != NC_STRING && len == 1, "dchag::NetcdfFile: attribute ",
                  var, ":", att, " of ", path_, " is not a single number");
    double value = 0;
    check(nc_get_att_double(id_, vid, att.c_str(), &value), "read attribute " + att);
    return value;
  }

 private:
  void check(int status, const std::string& what) const {
    Impl::require(status == NC_NOERR, "dchag::NetcdfFile: cannot ", what, " in '", path_,
                  "': ", nc_strerror(status));
  }

  std::string variable_name(int v) const {
    char name[NC_MAX_NAME + 1] = {};
    check(nc_inq_varname(id_, v, name), "name a variable");
    return name;
  }

  void close() {
    if (id_ >= 0) nc_close(id_);  // nothing useful to do with a failure to close a read-only file
    id_ = -1;
  }

  std::string path_;
  int id_ = -1;
};

}  // namespace dchag

#endif
