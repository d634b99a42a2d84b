# The CUDA backend (included from the top-level CMakeLists.txt when HMOE_GPU is cuda or
# emu): the device runtime (engine/cuda), the kernels (ops/cuda) and their link deps.
#   emu:  engine/cuda/*.cpp except the real-runtime files (*_cuda.cpp, *_cublas.cpp),
#         ops/cuda/*.cu and ops/moe/cuda/*.cu compiled as C++ (-x c++) against the SIMT emulator (hmoe_emu,
#         which exports HMOE_EMU=1), ops/cuda/*.cpp; no CUDA toolkit needed.
#   cuda: engine/cuda/*.cpp except *_emu.cpp, ops/cuda/*.cu by nvcc for sm_80 and sm_90
#         (object library hmoe_cuda_objects, with the ptxas resource report), linked
#         against CUDA::cudart and CUDA::cublas.
# Both define HMOE_WITH_CUDA_BACKEND=1 publicly (ops/dispatch.cpp then registers the
# cuda backend: its allocator and kernels, ops/cuda/register.cpp).

include(GNUInstallDirs)
set(HMOE_CUDA_ROOT ${PROJECT_SOURCE_DIR})
file(GLOB HMOE_CUDA_RUNTIME_SOURCES CONFIGURE_DEPENDS ${HMOE_CUDA_ROOT}/engine/cuda/*.cpp)
# Kernel rooms: ops/cuda (the foundation's op families) and ops/moe/cuda (the MoE ops).
file(GLOB HMOE_CUDA_KERNEL_CU CONFIGURE_DEPENDS ${HMOE_CUDA_ROOT}/ops/cuda/*.cu ${HMOE_CUDA_ROOT}/ops/moe/cuda/*.cu)
file(GLOB HMOE_CUDA_KERNEL_CPP CONFIGURE_DEPENDS ${HMOE_CUDA_ROOT}/ops/cuda/*.cpp ${HMOE_CUDA_ROOT}/ops/moe/cuda/*.cpp)

# What find_package(hmoe COMPONENTS static) must find again for the installed static
# library's deps (substituted into cmake/hmoeConfig.cmake.in).
set(HMOE_CONFIG_DEPENDENCIES "")

if(HMOE_GPU_RESOLVED STREQUAL "emu")
  if(NOT TARGET hmoe_emu)
    message(FATAL_ERROR "HMOE_GPU=emu needs the SIMT emulator (engine/emu)")
  endif()
  list(FILTER HMOE_CUDA_RUNTIME_SOURCES EXCLUDE REGEX "_(cuda|cublas)\\.cpp$")
  # The same kernel sources nvcc compiles, as C++ against engine/emu (device_code.h).
  # LANGUAGE CXX makes CMake (>= 3.20) pass -x c++ for the .cu extension; g++ does not
  # know nvcc's #pragma unroll.
  # g++ -O2 also warns "may be used uninitialized" on per-thread register arrays that
  # are filled in a guarded loop and read under the same guard (nvcc does not): kernels
  # only, the host code keeps the warning.
  set_source_files_properties(${HMOE_CUDA_KERNEL_CU} PROPERTIES LANGUAGE CXX
    COMPILE_OPTIONS "-Wno-unknown-pragmas;$<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>;${HMOE_EMU_COUNTER_FLAGS}")
  target_sources(hmoe_objects PRIVATE ${HMOE_CUDA_RUNTIME_SOURCES} ${HMOE_CUDA_KERNEL_CU} ${HMOE_CUDA_KERNEL_CPP})
  target_link_libraries(hmoe_objects PUBLIC hmoe_emu)
  # The project's own users of the static library (tests, tools) compile against the
  # emulator (HMOE_EMU=1 comes with it); an installed static library only links it.
  target_link_libraries(hmoe_static PUBLIC $<BUILD_INTERFACE:hmoe_emu>
                        INTERFACE $<INSTALL_INTERFACE:$<LINK_ONLY:hmoe::hmoe_emu>>)
  target_link_libraries(hmoe_shared PRIVATE hmoe_emu)
  target_compile_definitions(hmoe_shared PUBLIC $<BUILD_INTERFACE:HMOE_EMU=1>)
  set(HMOE_CONFIG_DEPENDENCIES "find_dependency(Boost COMPONENTS context)")
else()  # cuda
  list(FILTER HMOE_CUDA_RUNTIME_SOURCES EXCLUDE REGEX "_emu\\.cpp$")
  # The language itself is enabled earlier (cmake/HmoeCudaLanguage.cmake).

  option(HMOE_PTXAS_REPORT "Print ptxas's per-kernel resource report (-Xptxas -v) while compiling" ON)
  add_library(hmoe_cuda_objects OBJECT ${HMOE_CUDA_KERNEL_CU})
  set_target_properties(hmoe_cuda_objects PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_STANDARD 20
    CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
  target_include_directories(hmoe_cuda_objects PRIVATE ${HMOE_CUDA_ROOT})
  target_compile_definitions(hmoe_cuda_objects PRIVATE HMOE_WITH_CUDA_BACKEND=1 HMOE_GPU_CUDA=1)
  target_compile_options(hmoe_cuda_objects PRIVATE
    --expt-relaxed-constexpr
    "-Xcompiler=-Wall,-Wextra,-Wno-missing-field-initializers"
    # nvcc's own warning kinds and the host compiler's are errors; ptxas's spill and
    # local-memory warnings are not (-Werror=all-warnings would make them so): the
    # ptxas gate (tools/ptxas_gate.sh) judges those per kernel.
    $<$<BOOL:${HMOE_WERROR}>:-Werror=cross-execution-space-call,reorder,deprecated-declarations,default-stream-launch>
    $<$<BOOL:${HMOE_WERROR}>:-Xcompiler=-Werror>
    $<$<BOOL:${HMOE_PTXAS_REPORT}>:-Xptxas=-v,-warn-spills,-warn-lmem-usage>)
  target_link_libraries(hmoe_cuda_objects PRIVATE CUDA::cudart)

  target_sources(hmoe_objects PRIVATE ${HMOE_CUDA_RUNTIME_SOURCES} ${HMOE_CUDA_KERNEL_CPP})
  target_link_libraries(hmoe_objects PRIVATE CUDA::cudart CUDA::cublas)
  foreach(t hmoe_static hmoe_shared)
    target_sources(${t} PRIVATE $<TARGET_OBJECTS:hmoe_cuda_objects>)
    target_link_libraries(${t} PRIVATE CUDA::cudart CUDA::cublas)
  endforeach()
  set(HMOE_CONFIG_DEPENDENCIES "find_dependency(CUDAToolkit)")
endif()

target_compile_definitions(hmoe_objects PUBLIC HMOE_WITH_CUDA_BACKEND=1)
foreach(t hmoe_static hmoe_shared)
  target_compile_definitions(${t} PUBLIC $<BUILD_INTERFACE:HMOE_WITH_CUDA_BACKEND=1>)
endforeach()
