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
