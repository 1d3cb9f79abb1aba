# MicroPython CMake ports (esp32, rp2): USER_C_MODULES=<repo>/firmware/native/micropython.cmake
add_library(usermod_tpcore INTERFACE)
target_sources(usermod_tpcore INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/tp_mod.c
    ${CMAKE_CURRENT_LIST_DIR}/tp_pid.c
    ${CMAKE_CURRENT_LIST_DIR}/tp_mpc.c
)
target_include_directories(usermod_tpcore INTERFACE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(usermod INTERFACE usermod_tpcore)
