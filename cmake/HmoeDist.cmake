# The communicator (engine/dist), included from the top-level CMakeLists.txt after the
# GPU backend: the shared part and the single-process backend always; the MPI backend
# when HMOE_DIST resolves to mpi; with it the NCCL backend, over NCCL from the CUDA
# toolkit (HMOE_GPU=cuda) or over the emulated NCCL (HMOE_GPU=emu).
#   HMOE_DIST_RESOLVED: mpi | off       HMOE_DIST_NCCL: real | emulated | OFF
set(HMOE_DIST "auto" CACHE STRING "Distributed backends: auto|mpi|off (auto: mpi when MPI is found)")
set_property(CACHE HMOE_DIST PROPERTY STRINGS auto mpi off)
if(NOT HMOE_DIST MATCHES "^(auto|mpi|off)$")
  message(FATAL_ERROR "HMOE_DIST must be auto, mpi or off (got '${HMOE_DIST}')")
endif()

set(HMOE_DIST_DIR ${PROJECT_SOURCE_DIR}/engine/dist)
set(HMOE_DIST_SOURCES ${HMOE_DIST_DIR}/communicator.cpp ${HMOE_DIST_DIR}/environment.cpp ${HMOE_DIST_DIR}/watchdog.cpp)
set(HMOE_DIST_RESOLVED off)
set(HMOE_DIST_NCCL OFF)
# MPI's C API, found through FindMPI's CXX component (its C component needs the C
# language, which this project does not enable), without the deprecated C++ bindings.
set(MPI_CXX_SKIP_MPICXX ON)
if(HMOE_DIST STREQUAL "mpi")
  find_package(MPI REQUIRED COMPONENTS CXX)
elseif(HMOE_DIST STREQUAL "auto")
  find_package(MPI QUIET COMPONENTS CXX)
endif()
if(NOT HMOE_DIST STREQUAL "off" AND MPI_CXX_FOUND)
  set(HMOE_DIST_RESOLVED mpi)
endif()

if(HMOE_DIST_RESOLVED STREQUAL "mpi")
  list(APPEND HMOE_DIST_SOURCES ${HMOE_DIST_DIR}/mpi_util.cpp ${HMOE_DIST_DIR}/mpi_backend.cpp)
  set(HMOE_DIST_DEFINITIONS HMOE_WITH_MPI=1 ${MPI_CXX_COMPILE_DEFINITIONS})
  set(HMOE_DIST_INCLUDES ${MPI_CXX_INCLUDE_DIRS})
  set(HMOE_DIST_LIBRARIES ${MPI_CXX_LIBRARIES})
  list(FILTER HMOE_DIST_LIBRARIES EXCLUDE REGEX "mpi_cxx")  # the C++ bindings' library
  if(HMOE_GPU_RESOLVED STREQUAL "emu")
    list(APPEND HMOE_DIST_SOURCES ${HMOE_DIST_DIR}/nccl_emu.cpp ${HMOE_DIST_DIR}/nccl_backend.cpp)
    set(HMOE_DIST_NCCL emulated)
  elseif(HMOE_GPU_RESOLVED STREQUAL "cuda")
    find_path(HMOE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    find_library(HMOE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
    if(HMOE_NCCL_INCLUDE_DIR AND HMOE_NCCL_LIBRARY)
      list(APPEND HMOE_DIST_SOURCES ${HMOE_DIST_DIR}/nccl_backend.cpp)
      list(APPEND HMOE_DIST_INCLUDES ${HMOE_NCCL_INCLUDE_DIR})
      list(APPEND HMOE_DIST_LIBRARIES ${HMOE_NCCL_LIBRARY})
      set(HMOE_DIST_NCCL real)
    else()
      message(STATUS "hmoe: NCCL not found (nccl.h, libnccl): the nccl backend is not built")
    endif()
  endif()
  if(HMOE_DIST_NCCL)
    list(APPEND HMOE_DIST_DEFINITIONS HMOE_WITH_NCCL=1)
  endif()
  # On the communicator's sources only, so that the rest of the library compiles (and
  # hits ccache) the same with and without MPI.
  list(TRANSFORM HMOE_DIST_INCLUDES PREPEND "-isystem" OUTPUT_VARIABLE HMOE_DIST_INCLUDE_FLAGS)
  set_source_files_properties(${HMOE_DIST_SOURCES} PROPERTIES COMPILE_DEFINITIONS "${HMOE_DIST_DEFINITIONS}"
    COMPILE_OPTIONS "${HMOE_DIST_INCLUDE_FLAGS}")
  set(i 0)
  foreach(lib ${HMOE_DIST_LIBRARIES})  # MPI's, NCCL's: imported targets the package finds again
    hmoe_system_library(dist${i} "${lib}")
    foreach(t hmoe_static hmoe_shared)
      target_link_libraries(${t} PRIVATE hmoe::dist${i})
    endforeach()
    math(EXPR i "${i} + 1")
  endforeach()
endif()
target_sources(hmoe_objects PRIVATE ${HMOE_DIST_SOURCES})
message(STATUS "hmoe: distributed backends = single; mpi: ${HMOE_DIST_RESOLVED}; nccl: ${HMOE_DIST_NCCL}")
