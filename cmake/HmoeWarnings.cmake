# Warnings are errors for our own code (not for third-party headers).
function(hmoe_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-missing-field-initializers)
endfunction()
