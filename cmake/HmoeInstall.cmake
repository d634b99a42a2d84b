# Installs the libraries, the public headers (as <hmoe/...>), <hmoe/config.h>, a CMake
# package and pkg-config files, all relocatable (nothing records the install prefix):
#   find_package(hmoe)                     hmoe::hmoe, the shared library (needs Threads)
#   find_package(hmoe COMPONENTS static)   also hmoe::hmoe_static, whose dependencies
#                                          (BLAS, xxHash, MPI, Boost.Context, CUDA) it finds
#   pkg-config hmoe / hmoe-static          the same two for other build systems
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS hmoe_shared EXPORT hmoeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# Libraries outside the system's search path (CUDA's, MPI's) are found through RUNPATH.
set_target_properties(hmoe_shared PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
set(HMOE_STATIC_TARGETS hmoe_static)
if(HMOE_GPU_RESOLVED STREQUAL "emu")
  list(APPEND HMOE_STATIC_TARGETS hmoe_emu)
endif()
install(TARGETS ${HMOE_STATIC_TARGETS} EXPORT hmoeStaticTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})

# --- headers: what a program may include; backend internals (CPU and CUDA kernels and
# their dispatch contracts, the emulator, the communicator's backends) stay out.
# tests/install/check_install.sh compiles each installed header on its own.
file(GLOB_RECURSE HMOE_PUBLIC_HEADERS RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/engine/*.h ${PROJECT_SOURCE_DIR}/autograd/*.h ${PROJECT_SOURCE_DIR}/ops/*.h
  ${PROJECT_SOURCE_DIR}/models/*.h)
list(FILTER HMOE_PUBLIC_HEADERS EXCLUDE REGEX
  "^(engine/emu/|engine/cuda/|engine/dist/|ops/cpu/|ops/cuda/|ops/moe/cpu/|ops/moe/cuda/|ops/dispatch\\.h|engine/io/json\\.h)|_kernels\\.h$")
list(APPEND HMOE_PUBLIC_HEADERS hmoe.h engine/dist/communicator.h)
if(NOT HMOE_GPU_RESOLVED STREQUAL "off")
  list(APPEND HMOE_PUBLIC_HEADERS engine/cuda/runtime.h)  # device queries: count, properties
endif()
install(CODE "
  set(HMOE_HEADER_ROOT \"${PROJECT_SOURCE_DIR}\")
  set(HMOE_HEADERS \"${HMOE_PUBLIC_HEADERS}\")
  set(HMOE_HEADER_STAGE \"${PROJECT_BINARY_DIR}/install-headers\")
  set(HMOE_HEADER_DEST \"${CMAKE_INSTALL_INCLUDEDIR}/hmoe\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/HmoeInstallHeaders.cmake\")")
install(FILES ${PROJECT_BINARY_DIR}/include/hmoe/config.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hmoe)

# --- the CMake package ---------------------------------------------------------------
get_property(HMOE_CONFIG_LIBRARIES GLOBAL PROPERTY HMOE_CONFIG_LIBRARIES)
install(EXPORT hmoeTargets NAMESPACE hmoe:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
install(EXPORT hmoeStaticTargets NAMESPACE hmoe:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/hmoeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/hmoeConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/hmoeConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/hmoeConfig.cmake ${PROJECT_BINARY_DIR}/hmoeConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)

# --- pkg-config: paths relative to the .pc file (${pcfiledir}), so the install moves ---
set(HMOE_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH HMOE_PC_PREFIX /${HMOE_PC_DIR} /)
string(REGEX REPLACE "/$" "" HMOE_PC_PREFIX "\${pcfiledir}/${HMOE_PC_PREFIX}")
get_property(HMOE_SYSTEM_LIBRARY_PATHS GLOBAL PROPERTY HMOE_SYSTEM_LIBRARY_PATHS)
set(HMOE_PC_STATIC_LIBS "")
if(HMOE_GPU_RESOLVED STREQUAL "emu")
  set(HMOE_PC_STATIC_LIBS "\${libdir}/libhmoe_emu.a -lboost_context")
elseif(HMOE_GPU_RESOLVED STREQUAL "cuda")
  list(APPEND HMOE_SYSTEM_LIBRARY_PATHS ${CUDA_cudart_LIBRARY} ${CUDA_cublas_LIBRARY} ${CUDA_cublasLt_LIBRARY})
endif()
hmoe_link_flags(HMOE_PC_DEPS ${HMOE_SYSTEM_LIBRARY_PATHS})
string(STRIP "${HMOE_PC_STATIC_LIBS} ${HMOE_PC_DEPS} -pthread" HMOE_PC_DEPS)
foreach(pc hmoe hmoe-static)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${HMOE_PC_DIR})
endforeach()
