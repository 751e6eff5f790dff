# lowbit_add_module(NAME DEPS ...) builds src/NAME/**/*.cpp (but src/NAME/cuda/) into the static library lowbit_NAME.
# Public headers live in include/lowbit/NAME/, private ones beside the sources.
function(lowbit_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wno-missing-field-initializers>)
  endif()
endfunction()

function(lowbit_add_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  # src/NAME/cuda/ is the module's CUDA backend: its own library, built only with LOWBIT_CUDA.
  list(FILTER sources EXCLUDE REGEX "/src/${name}/cuda/")
  add_library(lowbit_${name} STATIC ${sources})
  target_include_directories(lowbit_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(lowbit_${name} PUBLIC ${ARG_DEPS})
  lowbit_warnings(lowbit_${name})
endfunction()
