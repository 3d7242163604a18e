# Precompiled headers: the heavy third-party headers (GoogleTest, nlohmann-json, fmt) and the
# standard headers nearly every file includes are parsed once per target instead of once per
# translation unit. CI builds the tree twice from scratch on two cores (release and sanitizer,
# scripts/test.sh), and these headers were most of each file's compile time.
# -DLATHE_PCH=OFF compiles every file on its own (to check that each includes what it uses).
option(LATHE_PCH "Precompile the heavy common headers once per target" ON)

set(LATHE_PCH_HEADERS <algorithm> <cmath> <cstdint> <cstring> <filesystem> <functional> <map> <memory>
    <optional> <string> <string_view> <utility> <vector> <fmt/format.h> <nlohmann/json.hpp>)

# lathe_pch(TARGET [EXTRA_HEADERS...]): gives TARGET a precompiled header of LATHE_PCH_HEADERS plus
# the extra ones.
function(lathe_pch target)
  if(LATHE_PCH)
    target_precompile_headers(${target} PRIVATE ${LATHE_PCH_HEADERS} ${ARGN})
  endif()
endfunction()

# lathe_pch_reuse(TARGET FROM): TARGET uses FROM's precompiled header (same flags and definitions).
function(lathe_pch_reuse target from)
  if(LATHE_PCH)
    target_precompile_headers(${target} REUSE_FROM ${from})
  endif()
endfunction()

# lathe_pch_exclude_special_sources(TARGET): a source compiled with options or definitions of its
# own (-mavx2 kernels, -O2 CPU kernels under the sanitizers, libFuzzer coverage hooks, CUDA) cannot
# use a header precompiled without them: clang refuses such a PCH, GCC silently ignores it. Call
# after every directory that sets source properties has been added.
function(lathe_pch_exclude_special_sources target)
  if(NOT LATHE_PCH)
    return()
  endif()
  get_target_property(sources ${target} SOURCES)
  foreach(src IN LISTS sources)
    get_source_file_property(options ${src} TARGET_DIRECTORY ${target} COMPILE_OPTIONS)
    get_source_file_property(definitions ${src} TARGET_DIRECTORY ${target} COMPILE_DEFINITIONS)
    if(options OR definitions OR src MATCHES "\\.cu$")
      set_source_files_properties(${src} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()

# Unity builds: a target's sources are compiled BATCH at a time as one translation unit, so that
# the header-only code they all instantiate is generated once per batch. Files in one batch share
# a translation unit: their file-local names (anonymous namespaces, statics) must differ.
option(LATHE_UNITY "Compile the library's and the CLI's sources a few at a time as unity sources" ON)

# lathe_unity(TARGET BATCH)
# CUDA sources stay one per unit: CMake 4.4 (the GPU machine's) batches them too, and the
# kernel files share file-local names (kThreads, kWarps); CMake 3.25 here never batched them.
function(lathe_unity target batch)
  if(LATHE_UNITY)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${batch})
    get_target_property(sources ${target} SOURCES)
    foreach(source IN LISTS sources)
      if(source MATCHES "\\.cu$")
        set_source_files_properties(${source} TARGET_DIRECTORY ${target} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
      endif()
    endforeach()
  endif()
endfunction()
