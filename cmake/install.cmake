# cmake/install.cmake: install rules and the exported CMake package of the C API, included by the top-level
# CMakeLists.txt when MRA_INSTALL is on (the default when mra is the top-level project).
#   cmake --install build --prefix PREFIX      then, in another project: find_package(mra REQUIRED)
# Installs include/mra/{mra.h,mra_reference.h}, the static C API (mra::runtime_host, mra::runtime with CUDA)
# with the static libraries it is made of, libmra.so (mra::shared), libmra_reference.so (mra::reference_c),
# and lib/cmake/mra/{mra-config.cmake, mra-config-version.cmake, mra-targets.cmake}. The kernels installed are
# those MRA_KERNELS selected when this build was configured; mra-config.cmake lists them in MRA_CONFIGURATIONS.
include(CMakePackageConfigHelpers)

set(mra_install_targets mra_kernel_headers mra_kernel_registry mra_simt mra_kernels_emulated mra_runtime_core
    mra_runtime_host mra_shared mra_reference_c)
if(TARGET mra_runtime)
  list(APPEND mra_install_targets mra_kernels_cuda mra_runtime)
endif()
install(TARGETS ${mra_install_targets} EXPORT mra-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mra)
install(FILES ${PROJECT_SOURCE_DIR}/runtime/mra.h ${PROJECT_SOURCE_DIR}/reference/c_api/mra_reference.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mra)

set(mra_config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mra)
install(EXPORT mra-targets NAMESPACE mra:: DESTINATION ${mra_config_dir})
get_property(MRA_CONFIGURATIONS GLOBAL PROPERTY MRA_BUILT_CONFIGS)
if(TARGET mra_runtime)
  set(MRA_PACKAGE_HAS_CUDA ON)
else()
  set(MRA_PACKAGE_HAS_CUDA OFF)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/mra-config.cmake.in
                              ${PROJECT_BINARY_DIR}/package/mra-config.cmake INSTALL_DESTINATION ${mra_config_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/mra-config-version.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/mra-config.cmake ${PROJECT_BINARY_DIR}/package/mra-config-version.cmake
        DESTINATION ${mra_config_dir})
