# fuzz/flags.cmake: the compiler setup of the fuzz build, included from the top-level
# CMakeLists.txt when PATLEDGER_FUZZ=ON, BEFORE any part of the tree is added, so that
# every library the fuzz targets link is instrumented the same way.
#
#   - The compiler must be clang-14 (Debian 12's clang ships libFuzzer in
#     libclang-rt-14-dev): CC=clang-14 CXX=clang++-14, see tools/fuzz.sh.
#   - Project code: -fsanitize=fuzzer-no-link,address,undefined (coverage feedback and
#     ASan/UBSan, no libFuzzer main). This reuses the PATLEDGER_SANITIZE mechanism of
#     the top-level CMakeLists.txt, which adds -fsanitize=<value> to every compile and
#     link; -fsanitize=fuzzer-no-link at link time links nothing extra.
#   - fuzz/CMakeLists.txt links the fuzz executables with -fsanitize=fuzzer (libFuzzer's
#     main), on top of the address,undefined runtimes.
#   - UBSan aborts at the first report (-fno-sanitize-recover), so libFuzzer records
#     undefined behaviour as a crash with its input.
#   - fuzz/compat/ goes first on the system include path: clang-14 cannot compile
#     libstdc++ 12's <expected> (see fuzz/compat/expected).
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR
   NOT CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 14 OR
   NOT CMAKE_CXX_COMPILER_VERSION VERSION_LESS 15)
  message(FATAL_ERROR
    "PATLEDGER_FUZZ=ON needs clang-14 (libFuzzer), but the C++ compiler is "
    "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} (${CMAKE_CXX_COMPILER}). "
    "Use a fresh build directory with CC=clang-14 CXX=clang++-14 (tools/fuzz.sh does), "
    "after: apt-get install -y clang-14 libclang-rt-14-dev")
endif()
if(PATLEDGER_SANITIZE)
  message(FATAL_ERROR "PATLEDGER_FUZZ=ON sets the sanitizers itself; do not also set "
                      "PATLEDGER_SANITIZE (got '${PATLEDGER_SANITIZE}')")
endif()
# A normal variable shadows the cache entry for the rest of this configure run.
set(PATLEDGER_SANITIZE "fuzzer-no-link,address,undefined")
add_compile_options(-fno-sanitize-recover=undefined)
include_directories(BEFORE SYSTEM ${CMAKE_CURRENT_LIST_DIR}/compat)
