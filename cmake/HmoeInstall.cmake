# Installs the library, its public headers and a CMake package so that
# find_package(hmoe) + target_link_libraries(app hmoe::hmoe) work from other projects.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS hmoe_static hmoe_shared EXPORT hmoeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(dir engine autograd ops models)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hmoe/${dir}
    FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh" PATTERN "cpu" EXCLUDE PATTERN "cuda" EXCLUDE PATTERN "emu" EXCLUDE)
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/hmoe.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hmoe)
install(EXPORT hmoeTargets NAMESPACE hmoe:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/hmoeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/hmoeConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/hmoeConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/hmoeConfig.cmake ${PROJECT_BINARY_DIR}/hmoeConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hmoe)
