# Install rules and CPack (.deb) for kiln; included from the top CMakeLists.txt.
#
# Layout, relative to the install prefix (/usr in the .deb; `cmake --install`
# uses CMAKE_INSTALL_PREFIX, /usr/local unless set; systemd and
# systemd-tmpfiles read /usr/local/lib/... too):
#   bin/kilnd, bin/kilnctl
#   lib/systemd/system/kilnd.service           ExecStart follows the prefix
#   lib/tmpfiles.d/kiln.conf
#   share/doc/kiln/                            README.md, kiln.conf.sample, copyright
#   share/kiln/schemas/*.json                  RPC messages and the config
#   share/man/man1/kilnctl.1.gz, share/man/man8/kilnd.8.gz   help2man, from --help
#   share/bash-completion/completions/kilnctl
# and the config: /etc/kiln/kiln.conf for prefix /usr (a conffile in the
# .deb), else <prefix>/etc/kiln/kiln.conf; the unit's --config names it.
# The prefix is read when installing, not when configuring, so the .deb is
# always laid out for /usr whatever this build directory was configured with.
# `cmake --install` never overwrites an existing kiln.conf.
# `cpack -G DEB` in the build directory writes kiln_<version>_<arch>.deb.

install(TARGETS kilnd kilnctl RUNTIME DESTINATION bin)
install(FILES systemd/tmpfiles.d/kiln.conf DESTINATION lib/tmpfiles.d)
install(FILES systemd/kiln.conf.sample README.md DESTINATION share/doc/kiln)
install(FILES LICENSE DESTINATION share/doc/kiln RENAME copyright)
install(DIRECTORY schemas/ DESTINATION share/kiln/schemas FILES_MATCHING PATTERN "*.json")
install(FILES packaging/completion/kilnctl DESTINATION share/bash-completion/completions)

# Man pages made at build time from each binary's --help and --version, so
# they cannot drift from the options (help2man, Debian package help2man).
find_program(KILN_HELP2MAN help2man)
if(KILN_HELP2MAN)
  set(kiln_man_dir ${CMAKE_BINARY_DIR}/man)
  add_custom_command(
    OUTPUT ${kiln_man_dir}/kilnctl.1.gz ${kiln_man_dir}/kilnd.8.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${kiln_man_dir}
    COMMAND ${KILN_HELP2MAN} --no-info --section 1 --name "boot instances from Glance images and explain the host's storage"
            --output ${kiln_man_dir}/kilnctl.1 $<TARGET_FILE:kilnctl>
    COMMAND ${KILN_HELP2MAN} --no-info --section 8 --name "kiln's compute-node agent"
            --output ${kiln_man_dir}/kilnd.8 $<TARGET_FILE:kilnd>
    COMMAND gzip -9nf ${kiln_man_dir}/kilnctl.1 ${kiln_man_dir}/kilnd.8
    DEPENDS kilnctl kilnd
    COMMENT "help2man: kilnctl.1, kilnd.8"
    VERBATIM)
  add_custom_target(kiln_man_pages ALL DEPENDS ${kiln_man_dir}/kilnctl.1.gz ${kiln_man_dir}/kilnd.8.gz)
  install(FILES ${kiln_man_dir}/kilnctl.1.gz DESTINATION share/man/man1)
  install(FILES ${kiln_man_dir}/kilnd.8.gz DESTINATION share/man/man8)
else()
  message(WARNING "help2man not found (tools/install-deps installs it): no man pages, and the .deb test fails")
endif()

# The unit in the tree names /usr/bin/kilnd and /etc/kiln/kiln.conf so that it
# reads (and analyzes) as installed by the .deb; another prefix is written in
# here. The operator's kiln.conf is theirs: the sample goes in place only when
# there is none (dpkg does the same for the conffile, asking first).
install(CODE "set(KILN_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")\nset(KILN_BINARY_DIR \"${CMAKE_BINARY_DIR}\")")
install(CODE [[
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(kiln_config_dir /etc/kiln)
  else()
    set(kiln_config_dir "${CMAKE_INSTALL_PREFIX}/etc/kiln")
  endif()
  file(READ "${KILN_SOURCE_DIR}/systemd/kilnd.service" kiln_unit)
  string(REPLACE "ExecStart=/usr/bin/kilnd --config /etc/kiln/kiln.conf"
                 "ExecStart=${CMAKE_INSTALL_PREFIX}/bin/kilnd --config ${kiln_config_dir}/kiln.conf"
                 kiln_unit "${kiln_unit}")
  # A directory per install: cpack and a `cmake --install` may run at once.
  string(RANDOM LENGTH 12 kiln_stage)
  set(kiln_stage "${KILN_BINARY_DIR}/systemd/install-${kiln_stage}")
  file(WRITE "${kiln_stage}/kilnd.service" "${kiln_unit}")
  # file(INSTALL) adds DESTDIR itself; EXISTS needs it spelled out.
  file(INSTALL "${kiln_stage}/kilnd.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
  file(REMOVE_RECURSE "${kiln_stage}")
  if(EXISTS "$ENV{DESTDIR}${kiln_config_dir}/kiln.conf")
    message(STATUS "Keeping: $ENV{DESTDIR}${kiln_config_dir}/kiln.conf (the sample is in share/doc/kiln)")
  else()
    file(INSTALL "${KILN_SOURCE_DIR}/systemd/kiln.conf.sample" DESTINATION "${kiln_config_dir}"
         RENAME kiln.conf PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
  endif()
]])

# --- CPack: one .deb named kiln -------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kiln)
set(CPACK_PACKAGE_VENDOR "kiln")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "kiln maintainers <kiln@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "compute-node agent for KVM hosts: Glance images, instance disks, libvirt domains")
# CPack puts the summary on the Description line and this text under it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "kilnd pulls images from an OpenStack Glance image service, checks them
(digests, signatures, a native format inspector), keeps raw bases in a local
cache, builds instance disks as qcow2 overlays in Nova's layout and defines
and starts domains through libvirt. It is driven over HTTP/JSON on a Unix
socket (optionally mutual TLS) and runs as a hardened Type=notify service.
kilnctl is the operator's command-line tool.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# RelWithDebInfo binaries carry ~100 MB of DWARF; the package ships them stripped.
set(CPACK_STRIP_FILES ON)
# Shared-library dependencies come from dpkg-shlibdeps (dpkg-dev); the tools
# kiln runs are named by hand: qemu-img, mkswap (util-linux), mkfs.ext4/.vfat.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "qemu-utils, util-linux, e2fsprogs, dosfstools")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libvirt-daemon-system")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "ntfs-3g, ovmf")
# Absolute destinations (/etc/kiln) land in the package, not on this machine.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/packaging/conffiles CONTENT "/etc/kiln/kiln.conf\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/packaging/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
