# lib/rpc sources; included from lib/CMakeLists.txt after add_library(kiln).
# target_sources(kiln PRIVATE rpc/....cpp)
