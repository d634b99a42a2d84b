# hmoe_system_library(<name> <path>): a system library found by its path (OpenBLAS,
# xxHash, MPI, NCCL) as the imported target hmoe::<name>. The installed static library
# links these targets by name and cmake/hmoeConfig.cmake.in creates them again by
# searching for the file (no absolute path of this machine in the package); the
# pkg-config files (cmake/HmoeInstall.cmake) list them as -L/-l flags.
function(hmoe_system_library name path)
  add_library(hmoe::${name} UNKNOWN IMPORTED GLOBAL)
  set_target_properties(hmoe::${name} PROPERTIES IMPORTED_LOCATION "${path}")
  get_filename_component(dir "${path}" DIRECTORY)
  get_filename_component(file "${path}" NAME)
  set_property(GLOBAL APPEND_STRING PROPERTY HMOE_CONFIG_LIBRARIES "  hmoe_find_library(${name} ${file} \"${dir}\")\n")
  set_property(GLOBAL APPEND PROPERTY HMOE_SYSTEM_LIBRARY_PATHS "${path}")
endfunction()

# hmoe_link_flags(<out> <path>...): -L<dir> -l<name> for each library file (no -L for the
# compiler's own search directories).
function(hmoe_link_flags out)
  set(flags "")
  foreach(path ${ARGN})
    get_filename_component(dir "${path}" DIRECTORY)
    get_filename_component(stem "${path}" NAME_WE)
    string(REGEX REPLACE "^lib" "" stem "${stem}")
    if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES AND NOT "-L${dir}" IN_LIST flags)
      list(APPEND flags "-L${dir}")
    endif()
    list(APPEND flags "-l${stem}")
  endforeach()
  list(JOIN flags " " joined)
  set(${out} "${joined}" PARENT_SCOPE)
endfunction()
