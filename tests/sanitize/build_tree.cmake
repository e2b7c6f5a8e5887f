# tests/sanitize/build_tree.cmake: configures and builds the sanitizer tree of the test suite; the CTest
# fixture `sanitize_build` of tests/sanitize/CMakeLists.txt runs it:
#   cmake -DSOURCE=. -DBINARY=<dir> -DCXX=g++ -DCC=gcc [-DKERNELS=<regex>] -P tests/sanitize/build_tree.cmake
# KERNELS: the configurations to build (MRA_KERNELS; tests/sanitize/CMakeLists.txt passes its subset).
# -O1 keeps the build and the tests fast enough for CI while leaving the sanitizers' reports exact; warnings
# are not errors here because sanitizer instrumentation makes g++ warn where the normal build does not (the
# normal build keeps -Werror). CUDA is off: the sanitizers instrument host code, and the kernels run on the
# emulator.
if(NOT KERNELS)
  set(KERNELS ".*")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY}
                        -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_C_COMPILER=${CC}
                        -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g1"
                        "-DCMAKE_C_FLAGS_RELEASE=-O1 -g1"
                        -DMRA_SANITIZE=ON -DMRA_WERROR=OFF -DCMAKE_CUDA_COMPILER= "-DMRA_KERNELS=${KERNELS}"
                COMMAND_ERROR_IS_FATAL ANY)
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} --target mra_sanitize_suite -j ${jobs}
                COMMAND_ERROR_IS_FATAL ANY)
