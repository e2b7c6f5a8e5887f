# tests/racecheck/build_tree.cmake: configures and builds the racecheck tree (MRA_RACECHECK=ON); the CTest
# fixture `racecheck_build` of tests/racecheck/CMakeLists.txt runs it:
#   cmake -DSOURCE=. -DBINARY=<dir> [-DKERNELS=<MRA_KERNELS>] -P tests/racecheck/build_tree.cmake
# The tree is built with clang++ (14 or later; tools/bootstrap.sh installs it), whatever the outer build uses:
# GCC 12's ThreadSanitizer runtime reuses the ids of finished fibers, so it misses races between two blocks
# (the planted blocks_same_word race goes unreported there), and it takes about half a millisecond to create
# a fiber (one per CUDA thread per block), where clang's takes microseconds. -O1 keeps the build and the run
# short while the reports stay exact; warnings are not errors under the instrumentation (the normal build
# keeps -Werror). CUDA is off: the kernels run on the emulator.
if(NOT KERNELS)
  set(KERNELS ".*")  # the outer build's MRA_KERNELS: every configuration unless it was narrowed
endif()
find_program(clangxx NAMES clang++ clang++-14 clang++-15 clang++-16)
find_program(clangc NAMES clang clang-14 clang-15 clang-16)
if(NOT clangxx OR NOT clangc)
  message(FATAL_ERROR "the racecheck tree needs clang++ 14 or later (tools/bootstrap.sh installs it): GCC's "
                      "ThreadSanitizer runtime misses races between blocks")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY}
                        -DCMAKE_CXX_COMPILER=${clangxx} -DCMAKE_C_COMPILER=${clangc}
                        -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g1"
                        "-DCMAKE_C_FLAGS_RELEASE=-O1 -g1"
                        -DMRA_RACECHECK=ON -DMRA_WERROR=OFF -DMRA_CUDA=OFF "-DMRA_KERNELS=${KERNELS}"
                COMMAND_ERROR_IS_FATAL ANY)
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} --target mra_racecheck_suite -j ${jobs}
                COMMAND_ERROR_IS_FATAL ANY)
