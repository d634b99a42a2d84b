# Warnings are errors for our own code (not for third-party headers), unless
# HMOE_WERROR is off (used for builds with another compiler, e.g. the clang fuzzer).
function(hmoe_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-missing-field-initializers)
  if(HMOE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
