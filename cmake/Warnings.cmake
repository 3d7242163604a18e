# Strict warnings for lathe's own targets only (third-party headers come in as SYSTEM).
function(lathe_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-error=deprecated-declarations>)
endfunction()
