# hmoe_add_gtest(name SOURCES a.cpp ... LABELS unit;gradcheck [LIBS extra ...])
# builds one GoogleTest binary and registers it with ctest under the given labels.
find_package(GTest REQUIRED)
function(hmoe_add_gtest name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LABELS;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE hmoe_static GTest::gtest GTest::gtest_main ${ARG_LIBS})
  hmoe_set_warnings(${name})
  add_test(NAME ${name} COMMAND ${name} --gtest_brief=1)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

# hmoe_add_cuda_tests(prefix): every test_<stem>.cpp in the calling folder becomes its own
# binary test_cuda_<prefix><stem>, labelled "cuda;kernels" and part of hmoe_cuda_tests.
# Only in the real or emulated CUDA build; without a GPU the real build's tests skip
# (HMOE_REQUIRE_CUDA).
function(hmoe_add_cuda_tests prefix)
  if(HMOE_GPU_RESOLVED STREQUAL "off")
    return()
  endif()
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_*.cpp)
  foreach(src ${srcs})
    get_filename_component(stem ${src} NAME_WE)
    string(REGEX REPLACE "^test_" "" stem ${stem})
    hmoe_add_gtest(test_cuda_${prefix}${stem} SOURCES ${src} LABELS "cuda;kernels")
    add_dependencies(hmoe_cuda_tests test_cuda_${prefix}${stem})
  endforeach()
endfunction()

# Programs run on several ranks under OpenMPI's launcher (HMOE_DIST=mpi builds): more
# ranks than cores, no core binding (shared machines), allowed to run as root (CI
# containers), one thread per rank. HMOE_MPIRUN ends with the rank-count flag.
if(HMOE_DIST_RESOLVED STREQUAL "mpi")
  set(HMOE_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none ${MPIEXEC_PREFLAGS} ${MPIEXEC_NUMPROC_FLAG})
  set(HMOE_MPI_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HMOE_NUM_THREADS=1)
  if(HMOE_SANITIZE)
    # OpenMPI's own allocations live until exit: suppressed by library (see the file).
    list(APPEND HMOE_MPI_ENV
         "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/engine/dist/lsan_openmpi.supp:fast_unwind_on_malloc=0:print_suppressions=0")
  endif()
endif()

# hmoe_add_mpi_test(name ranks [LABELS l...] [TIMEOUT s] [ENV VAR=value...] COMMAND exe args...):
# the command on `ranks` ranks under mpirun; exit 77 means skipped.
function(hmoe_add_mpi_test name ranks)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;ENV;COMMAND" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${HMOE_MPIRUN} ${ranks} ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT} SKIP_RETURN_CODE 77
                       ENVIRONMENT "${HMOE_MPI_ENV};${ARG_ENV}")
endfunction()

# The emulated cuda device is off unless a program opts in (engine/cuda/runtime_emu.cpp).
# Every test of an emu build runs with HMOE_EMULATE_CUDA=1: a file that ctest reads
# before it runs anything sets it in ctest's environment, which the tests, the scripts
# they run and mpirun's ranks inherit.
if(HMOE_GPU_RESOLVED STREQUAL "emu")
  file(WRITE ${PROJECT_BINARY_DIR}/hmoe_test_env.cmake "set(ENV{HMOE_EMULATE_CUDA} 1)\n")
  get_property(hmoe_test_includes DIRECTORY ${PROJECT_SOURCE_DIR} PROPERTY TEST_INCLUDE_FILES)
  if(NOT ${PROJECT_BINARY_DIR}/hmoe_test_env.cmake IN_LIST hmoe_test_includes)
    set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY TEST_INCLUDE_FILES
                 ${PROJECT_BINARY_DIR}/hmoe_test_env.cmake)
  endif()
endif()
