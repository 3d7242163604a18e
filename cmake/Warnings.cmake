# Strict warnings for lathe's own targets only (third-party headers come in as SYSTEM).
# GCC 12 at -O2/-O3 reports false -Wrestrict positives inside libstdc++'s std::string code
# (GCC bug 105329), and with precompiled headers (cmake/Pch.cmake) false -Warray-bounds and
# -Wstringop-overflow ones from the same memcpy in std::string's append and insert (GCC bugs
# 105651, 106199); they stay visible as warnings but do not fail the build.
function(lathe_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-error=deprecated-declarations>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-error=restrict -Wno-error=array-bounds -Wno-error=stringop-overflow>)
endfunction()
