# The API reference: Doxygen over exactly the headers `cmake --install` installs (the list
# cmake/HmoeInstall.cmake makes, HMOE_PUBLIC_HEADERS, staged as installed, with their
# includes as <hmoe/...>) and docs/mainpage.md, into build/docs/html. Target `docs`; ctest
# `docs` (label docs) runs the same and fails on any Doxygen warning, so a public
# declaration without documentation fails the suite.
#   HMOE_BUILD_DOCS=auto  the target and the test exist when doxygen is found (the test
#                         is skipped without it)
#   HMOE_BUILD_DOCS=ON    doxygen is required and the reference is part of the default build
#   HMOE_BUILD_DOCS=OFF   neither
set(HMOE_BUILD_DOCS "auto" CACHE STRING "Build the API reference with Doxygen: auto|ON|OFF")
set_property(CACHE HMOE_BUILD_DOCS PROPERTY STRINGS auto ON OFF)
if(NOT HMOE_BUILD_DOCS)
  return()
endif()
if(HMOE_BUILD_DOCS STREQUAL "auto")
  find_package(Doxygen QUIET)
else()
  find_package(Doxygen REQUIRED)
endif()

if(DOXYGEN_FOUND)
  set(HMOE_DOCS_DIR ${PROJECT_BINARY_DIR}/docs)
  set(HMOE_DOCS_STAGE ${HMOE_DOCS_DIR}/include/hmoe)
  set(HMOE_DOCS_INPUT "")
  foreach(h ${HMOE_PUBLIC_HEADERS})
    string(APPEND HMOE_DOCS_INPUT " \\\n    \"${HMOE_DOCS_STAGE}/${h}\"")
  endforeach()
  configure_file(${PROJECT_SOURCE_DIR}/docs/Doxyfile.in ${HMOE_DOCS_DIR}/Doxyfile @ONLY)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/HmoeDocsRun.cmake.in ${HMOE_DOCS_DIR}/run_doxygen.cmake @ONLY)
  set(HMOE_DOCS_ALL "")
  if(HMOE_BUILD_DOCS STREQUAL "ON")
    set(HMOE_DOCS_ALL ALL)
  endif()
  add_custom_target(docs ${HMOE_DOCS_ALL}
    COMMAND ${CMAKE_COMMAND} -P ${HMOE_DOCS_DIR}/run_doxygen.cmake
    COMMENT "API reference: ${HMOE_DOCS_DIR}/html/index.html"
    VERBATIM)
endif()

if(HMOE_BUILD_TESTS)
  if(DOXYGEN_FOUND)
    add_test(NAME docs COMMAND ${CMAKE_COMMAND} -P ${HMOE_DOCS_DIR}/run_doxygen.cmake)
  else()
    add_test(NAME docs COMMAND sh -c "echo 'doxygen not found: the API reference is not checked'; exit 77")
  endif()
  set_tests_properties(docs PROPERTIES LABELS "docs" SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()
