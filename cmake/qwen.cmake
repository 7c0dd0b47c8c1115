# Shared helpers for the project's CMake files.

# The architecture the build targets (the compiler's, which a cross build's toolchain file sets):
# QWEN_ARCH is x86_64 or aarch64; anything else is refused here rather than half-built.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(QWEN_ARCH x86_64)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(QWEN_ARCH aarch64)
else()
  message(FATAL_ERROR "qwen-serve builds for x86_64 and aarch64, not ${CMAKE_SYSTEM_PROCESSOR}")
endif()

if(QWEN_ARCH STREQUAL "aarch64")
  # C++ code is compiled with -ffp-contract=fast by default, so GCC fuses a * b + c into one
  # multiply-add wherever the target has the instruction, and every ARMv8 core has it, while the
  # x86-64 baseline has none. inference/ turns contraction off for its libraries on every
  # architecture (docs/numerics.md); on aarch64 the rest (the service, the CLI, the tests'
  # expectations) is built so too, so that no float expression rounds differently from x86-64.
  add_compile_options(-ffp-contract=off)
endif()

# qwen_arch_sources(out src...): the sources of `src` that belong to this architecture: files
# named *_avx2.cc / *_avx512.cc only on x86-64, *_neon.cc / *_neondot.cc only on aarch64.
function(qwen_arch_sources out)
  set(kept)
  foreach(src ${ARGN})
    if(src MATCHES "_(avx2|avx512)\\.cc$" AND NOT QWEN_ARCH STREQUAL "x86_64")
      continue()
    endif()
    if(src MATCHES "_(neon|neondot)\\.cc$" AND NOT QWEN_ARCH STREQUAL "aarch64")
      continue()
    endif()
    list(APPEND kept ${src})
  endforeach()
  set(${out} ${kept} PARENT_SCOPE)
endfunction()

# Compile flags per SIMD level. Kernels for a level live in files named *_avx2.cc / *_avx512.cc
# (x86-64) or *_neon.cc / *_neondot.cc (aarch64); only those files get the flags, the rest of the
# program is built for the architecture's baseline (x86-64; ARMv8.0-A, whose Advanced SIMD the
# NEON level needs nothing more for), and dispatch picks one level at run time.
set(QWEN_NEON_FLAGS -march=armv8-a)
set(QWEN_NEONDOT_FLAGS -march=armv8.2-a+dotprod)
set(QWEN_AVX2_FLAGS -mavx2 -mfma -mf16c -mbmi2)
set(QWEN_AVX512_FLAGS -mavx2 -mfma -mf16c -mbmi2 -mavx512f -mavx512bw -mavx512vl -mavx512dq
    -mavx512vnni -mavx512bf16
    # GCC 12 warns inside its own AVX-512 headers (the `__Y = __Y` idiom of undefined vectors).
    -Wno-maybe-uninitialized -Wno-uninitialized)

# In a fuzz build (QWEN_FUZZ) the kernels are linked only because the libraries the targets use
# depend on them; no fuzz target runs them. Instrumented and optimised, clang takes tens of
# minutes on gemm_avx512.cc alone, so there they are compiled plain and unoptimised.
set(QWEN_FUZZ_SIMD_FLAGS -O0 -fno-sanitize=all)

function(qwen_simd_sources)
  foreach(src ${ARGN})
    if(src MATCHES "_avx512\\.cc$")
      set(flags ${QWEN_AVX512_FLAGS})
    elseif(src MATCHES "_avx2\\.cc$")
      set(flags ${QWEN_AVX2_FLAGS})
    elseif(src MATCHES "_neondot\\.cc$")
      set(flags ${QWEN_NEONDOT_FLAGS})
    elseif(src MATCHES "_neon\\.cc$")
      set(flags ${QWEN_NEON_FLAGS})
    else()
      continue()
    endif()
    if(QWEN_FUZZ)
      list(APPEND flags ${QWEN_FUZZ_SIMD_FLAGS})
    endif()
    set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${flags}")
  endforeach()
endfunction()

# The servers and commands that tests start keep their packed weight copies (--packed_dir)
# here, not in the machine's /dev/shm, where every fresh clone's copies would stay behind.
set(QWEN_TEST_PACKED_DIR ${CMAKE_BINARY_DIR}/test-packed)
file(MAKE_DIRECTORY ${QWEN_TEST_PACKED_DIR})

# qwen_test(NAME name LABEL unit|conformance|e2e|bench [kernels] SOURCES ... LIBS ... [TIMEOUT s]
#           [EMULATED_SHARDS n])
# One gtest executable registered with ctest, run from the source tree so it finds tests/data.
# LABEL takes several labels (LABEL "unit;kernels" arrives as two arguments).
# EMULATED_SHARDS: under an emulator (a cross build's tests, 10-30 times slower), the executable
# is registered as n ctest tests name_shard_0 ... name_shard_<n-1>, each running every n-th of its
# test cases (gtest's GTEST_TOTAL_SHARDS / GTEST_SHARD_INDEX): together exactly the cases of one
# run, but ctest can spread them over its jobs and each has its own timeout. Natively: one test.
function(qwen_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT;EMULATED_SHARDS" "LABEL;SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin/tests)
  set(shards 1)
  if(T_EMULATED_SHARDS AND CMAKE_CROSSCOMPILING_EMULATOR)
    set(shards ${T_EMULATED_SHARDS})
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  # Sanitized builds (scripts/sanitize) run several times slower.
  if(QWEN_SANITIZE)
    math(EXPR T_TIMEOUT "${T_TIMEOUT} * 5")
  endif()
  # Cross builds run their tests under an emulator (cmake/aarch64-linux-gnu.cmake): 10-30 times
  # slower (the model's conformance cases take minutes each, docs/arm64.md), and the tests start
  # this build's programs through it (QWEN_TEST_EMULATOR).
  set(env "QWEN_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;QWEN_BIN_DIR=${CMAKE_BINARY_DIR}/bin;QWEN_PACKED_DIR=${QWEN_TEST_PACKED_DIR}")
  if(CMAKE_CROSSCOMPILING_EMULATOR)
    math(EXPR T_TIMEOUT "${T_TIMEOUT} * 10")
    list(JOIN CMAKE_CROSSCOMPILING_EMULATOR " " emulator)
    list(APPEND env "QWEN_TEST_EMULATOR=${emulator}")
  endif()
  if(shards EQUAL 1)
    add_test(NAME ${T_NAME} COMMAND ${T_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABEL}" TIMEOUT ${T_TIMEOUT}
      ENVIRONMENT "${env}")
  else()
    math(EXPR last "${shards} - 1")
    foreach(i RANGE ${last})
      add_test(NAME ${T_NAME}_shard_${i} COMMAND ${T_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
      set_tests_properties(${T_NAME}_shard_${i} PROPERTIES LABELS "${T_LABEL}" TIMEOUT ${T_TIMEOUT}
        ENVIRONMENT "${env};GTEST_TOTAL_SHARDS=${shards};GTEST_SHARD_INDEX=${i}")
    endforeach()
  endif()
endfunction()

# qwen_benchmark(NAME name SOURCES ... LIBS ...): a Google Benchmark program, labelled bench.
function(qwen_benchmark)
  cmake_parse_arguments(B "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${B_NAME} ${B_SOURCES})
  target_link_libraries(${B_NAME} PRIVATE ${B_LIBS} benchmark::benchmark)
  set_target_properties(${B_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin/bench)
  add_test(NAME ${B_NAME} COMMAND ${B_NAME} --benchmark_min_time=0.2
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(${B_NAME} PROPERTIES LABELS bench TIMEOUT 1800
    ENVIRONMENT "QWEN_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;QWEN_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
endfunction()

# qwen_link_into_executables(dir lib): links `lib` into every executable defined in `dir` and
# its subdirectories (used by the TSan build to add its annotations everywhere).
function(qwen_link_into_executables dir lib)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t ${targets})
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_link_libraries(${t} PRIVATE ${lib})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub ${subdirs})
    qwen_link_into_executables(${sub} ${lib})
  endforeach()
endfunction()

# qwen_proto_library(NAME target ROOT dir PROTOS a.proto ... [GRPC] [LIBS ...])
# Generates C++ (and with GRPC, gRPC service stubs) for .proto files given relative to ROOT, into
# ${CMAKE_CURRENT_BINARY_DIR}, and builds them as a static library whose users include
# "<path relative to ROOT minus .proto>.pb.h". Only service/, cli/ and tests may link the result:
# inference/ stays free of protobuf and gRPC.
function(qwen_proto_library)
  cmake_parse_arguments(P "GRPC" "NAME;ROOT" "PROTOS;LIBS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR})
  set(srcs)
  foreach(proto ${P_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" stem ${proto})
    set(outs ${out_dir}/${stem}.pb.cc ${out_dir}/${stem}.pb.h)
    set(args --cpp_out=${out_dir})
    if(P_GRPC)
      list(APPEND outs ${out_dir}/${stem}.grpc.pb.cc ${out_dir}/${stem}.grpc.pb.h)
      list(APPEND args --grpc_out=${out_dir} --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>)
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND protobuf::protoc ${args} -I ${P_ROOT} -I ${Protobuf_INCLUDE_DIRS} ${P_ROOT}/${proto}
      DEPENDS ${P_ROOT}/${proto} protobuf::protoc
      COMMENT "protoc ${proto}"
      VERBATIM)
    list(APPEND srcs ${out_dir}/${stem}.pb.cc)
    if(P_GRPC)
      list(APPEND srcs ${out_dir}/${stem}.grpc.pb.cc)
    endif()
  endforeach()
  add_library(${P_NAME} STATIC ${srcs})
  # Generated code is not ours to warn about.
  target_compile_options(${P_NAME} PRIVATE -w)
  target_include_directories(${P_NAME} PUBLIC ${out_dir})
  target_link_libraries(${P_NAME} PUBLIC protobuf::libprotobuf ${P_LIBS})
  if(P_GRPC)
    target_link_libraries(${P_NAME} PUBLIC gRPC::grpc++)
  endif()
endfunction()
