# Run by `cmake --install` (cmake/HmoeInstall.cmake passes the variables): installs the
# public headers under PREFIX/include/hmoe with the project's own includes rewritten
# from the source tree's root-relative form ("engine/tensor.h") to <hmoe/engine/tensor.h>,
# so that a program needs only -I PREFIX/include.
#   HMOE_HEADER_ROOT     the source tree        HMOE_HEADERS  header paths relative to it
#   HMOE_HEADER_STAGE    a scratch folder of the build tree
#   HMOE_HEADER_DEST     include/hmoe, relative to the install prefix (unset: stage only,
#                        as the API reference does: cmake/HmoeDocs.cmake)
file(REMOVE_RECURSE "${HMOE_HEADER_STAGE}")
foreach(h ${HMOE_HEADERS})
  file(READ "${HMOE_HEADER_ROOT}/${h}" text)
  string(REGEX REPLACE "#include \"((engine|autograd|ops|models)/[^\"]+)\"" "#include <hmoe/\\1>" text "${text}")
  file(WRITE "${HMOE_HEADER_STAGE}/${h}" "${text}")
endforeach()
if(DEFINED HMOE_HEADER_DEST)
  file(INSTALL "${HMOE_HEADER_STAGE}/" DESTINATION "${CMAKE_INSTALL_PREFIX}/${HMOE_HEADER_DEST}")
endif()
