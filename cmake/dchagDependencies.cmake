# Finds Kokkos, Kokkos Kernels and MPI and exposes them as one target, dchag::deps.
#
# Included both by our own build and by the installed dchagConfig.cmake, so that a consumer
# gets exactly the same normalisation we were built with.
#
# Two kinds of Kokkos install exist in the wild:
#  * a standard CMake install of Kokkos / Kokkos Kernels exports Kokkos::kokkos and
#    Kokkos::kokkoskernels, which carry include directories and backend flags;
#  * Debian's TriBITS build (trilinos 13.2, Kokkos 3.4.1) exports trilinos_kokkoscore and
#    trilinos_kokkoskernels without include directories, and a Kokkos::kokkos whose include
#    directory does not exist. Linking that Kokkos::kokkos makes CMake fail at generate time,
#    so we build our own interface target from the real libraries instead.
include(CMakeFindDependencyMacro)

# Inside dchagConfig.cmake, find_dependency forwards REQUIRED/QUIET from the consumer's call;
# in our own build a missing dependency is a hard error.
macro(_dchag_find_dependency)
  if(CMAKE_FIND_PACKAGE_NAME STREQUAL "dchag")
    find_dependency(${ARGN})
  else()
    find_package(${ARGN} REQUIRED)
  endif()
endmacro()

if(NOT TARGET dchag::deps)
  # Kokkos does not support GNU extensions and would force them off with a warning.
  if(NOT DEFINED CMAKE_CXX_EXTENSIONS)
    set(CMAKE_CXX_EXTENSIONS OFF)
  endif()
  _dchag_find_dependency(Kokkos)
  _dchag_find_dependency(KokkosKernels)
  _dchag_find_dependency(MPI COMPONENTS CXX)

  add_library(dchag::deps INTERFACE IMPORTED)
  if(TARGET Kokkos::kokkoskernels)
    set_property(TARGET dchag::deps APPEND PROPERTY
      INTERFACE_LINK_LIBRARIES Kokkos::kokkoskernels Kokkos::kokkos)
    set(DCHAG_KOKKOS_FLAVOUR "standard")
  elseif(TARGET trilinos_kokkoskernels)
    if(NOT KokkosKernels_INCLUDE_DIRS)
      message(FATAL_ERROR "dchag: found a TriBITS Kokkos Kernels without KokkosKernels_INCLUDE_DIRS")
    endif()
    get_filename_component(_dchag_kk_inc "${KokkosKernels_INCLUDE_DIRS}" ABSOLUTE)
    set_property(TARGET dchag::deps APPEND PROPERTY
      INTERFACE_LINK_LIBRARIES trilinos_kokkoskernels trilinos_kokkoscore)
    set_property(TARGET dchag::deps APPEND PROPERTY
      INTERFACE_INCLUDE_DIRECTORIES "${_dchag_kk_inc}")
    # Debian's libraries were compiled with -O2 but without -DNDEBUG; nothing else is needed.
    set(DCHAG_KOKKOS_FLAVOUR "tribits")
  else()
    message(FATAL_ERROR "dchag: Kokkos Kernels was found but exports neither Kokkos::kokkoskernels "
                        "nor trilinos_kokkoskernels; point KokkosKernels_DIR at a standard install")
  endif()
  set_property(TARGET dchag::deps APPEND PROPERTY INTERFACE_LINK_LIBRARIES MPI::MPI_CXX)

  # Which execution spaces the Kokkos we found has (used to pick test spaces and to report).
  set(DCHAG_KOKKOS_DEVICES "${Kokkos_DEVICES}")
  if(NOT Kokkos_FIND_QUIETLY)
    message(STATUS "dchag: Kokkos ${Kokkos_VERSION} (${DCHAG_KOKKOS_FLAVOUR}), devices: ${Kokkos_DEVICES}")
  endif()
endif()

# Optional: the netCDF C library, for reading real data (dchag/io/weatherbench.hpp). When it is
# found, dchag::netcdf carries its include directory, library and the compile definition
# DCHAG_HAVE_NETCDF=1; link it next to dchag::dchag. Nothing else in the library needs it.
# We look for the header and the library directly: Debian's netCDFConfig.cmake names the
# static libpthread.a and libdl.a, which must not end up in a shared link.
if(NOT DEFINED DCHAG_ENABLE_NETCDF)
  set(DCHAG_ENABLE_NETCDF ON)
endif()
if(DCHAG_ENABLE_NETCDF AND NOT TARGET dchag::netcdf)
  find_path(DCHAG_NETCDF_INCLUDE_DIR netcdf.h)
  find_library(DCHAG_NETCDF_LIBRARY netcdf)
  if(DCHAG_NETCDF_INCLUDE_DIR AND DCHAG_NETCDF_LIBRARY)
    # GLOBAL: a project that takes dchag through add_subdirectory links it by name too.
    add_library(dchag::netcdf INTERFACE IMPORTED GLOBAL)
    set_target_properties(dchag::netcdf PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${DCHAG_NETCDF_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${DCHAG_NETCDF_LIBRARY}"
      INTERFACE_COMPILE_DEFINITIONS "DCHAG_HAVE_NETCDF=1")
  endif()
endif()
if(TARGET dchag::netcdf)
  set(DCHAG_HAVE_NETCDF ON)
else()
  set(DCHAG_HAVE_NETCDF OFF)
endif()
if(NOT DCHAG_NETCDF_REPORTED AND NOT Kokkos_FIND_QUIETLY)
  set(DCHAG_NETCDF_REPORTED ON)
  if(DCHAG_HAVE_NETCDF)
    message(STATUS "dchag: netCDF found (${DCHAG_NETCDF_LIBRARY}): dchag::netcdf, "
                   "WeatherBench reader")
  else()
    message(STATUS "dchag: netCDF not found or disabled: no WeatherBench reader "
                   "(scripts/install_deps.sh installs libnetcdf-dev)")
  endif()
endif()
