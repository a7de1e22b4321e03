# The Debian package: install rules for what an operator's box needs, and CPack's
# DEB generator. Included from the top-level CMakeLists.txt, after the targets.
#
#   cmake --build build --target package-deb      -> build/wanopt_<version>_amd64.deb
#
# Debian paths (CPACK_SET_DESTDIR: the units' absolute destination lands in the
# package, not on this machine):
#   /usr/bin/wanopt (stripped), /usr/sbin/wanopt-intercept (deploy/intercept)
#   /lib/systemd/system/wanopt.service, wanopt-intercept.service (deploy/debian/:
#     packaged paths, User=wanopt; neither enabled nor started on install)
#   /usr/share/doc/wanopt/ README.md, deploy/README.md, copyright, changelog.gz,
#     examples/*.toml
#   /usr/share/wanopt/wanopt.lua, /usr/share/man/man1/wanopt.1.gz,
#     /usr/share/man/man8/wanopt-intercept.8.gz
# postinst creates the system user wanopt, /etc/wanopt and /var/lib/wanopt;
# postrm purge removes the user and /var/lib/wanopt.

set(WANOPT_DEB_DIR ${PROJECT_SOURCE_DIR}/deploy/debian)
set(WANOPT_DEB_GENERATED ${PROJECT_BINARY_DIR}/debian)
# No mailing list exists: .invalid (RFC 2606) says so plainly, and lintian accepts
# it (it rejects localhost as a bogus mail host, an error).
set(WANOPT_DEB_MAINTAINER "wanopt developers <wanopt@wanopt.invalid>")

# cpack runs the `preinstall` target first; without this it depends on `all` and
# packaging would build every test and benchmark. package-deb depends on wanopt only.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

# Man pages carry the version; man pages and the changelog are installed gzipped
# (gzip -n: no name or timestamp, so the same sources make the same package).
file(MAKE_DIRECTORY ${WANOPT_DEB_GENERATED})
configure_file(${WANOPT_DEB_DIR}/wanopt.1 ${WANOPT_DEB_GENERATED}/wanopt.1 @ONLY)
configure_file(${WANOPT_DEB_DIR}/wanopt-intercept.8 ${WANOPT_DEB_GENERATED}/wanopt-intercept.8 @ONLY)
configure_file(${WANOPT_DEB_DIR}/changelog ${WANOPT_DEB_GENERATED}/changelog @ONLY)
configure_file(${WANOPT_DEB_DIR}/copyright ${WANOPT_DEB_GENERATED}/copyright @ONLY)
foreach(page wanopt.1 wanopt-intercept.8 changelog)
  execute_process(COMMAND gzip -9 -n -c ${WANOPT_DEB_GENERATED}/${page}
                  OUTPUT_FILE ${WANOPT_DEB_GENERATED}/${page}.gz COMMAND_ERROR_IS_FATAL ANY)
endforeach()

install(TARGETS wanopt RUNTIME DESTINATION bin)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/deploy/intercept DESTINATION sbin RENAME wanopt-intercept)
install(FILES ${WANOPT_DEB_DIR}/wanopt.service ${WANOPT_DEB_DIR}/wanopt-intercept.service
        DESTINATION /lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${WANOPT_DEB_GENERATED}/copyright
              ${WANOPT_DEB_GENERATED}/changelog.gz
        DESTINATION share/doc/wanopt)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/README.md DESTINATION share/doc/wanopt/deploy)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/examples/ DESTINATION share/doc/wanopt/examples
        FILES_MATCHING PATTERN "*.toml")
install(FILES ${PROJECT_SOURCE_DIR}/deploy/wireshark/wanopt.lua DESTINATION share/wanopt)
install(FILES ${WANOPT_DEB_GENERATED}/wanopt.1.gz DESTINATION share/man/man1)
install(FILES ${WANOPT_DEB_GENERATED}/wanopt-intercept.8.gz DESTINATION share/man/man8)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME wanopt)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})  # what `wanopt --version` prints too
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)         # wanopt_<version>_<arch>.deb
set(CPACK_PACKAGE_CONTACT ${WANOPT_DEB_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "WAN optimization proxy pair (branch and datacenter boxes)")
set(CPACK_PACKAGE_DESCRIPTION
"wanopt carries connections from a branch office to a datacenter between two
boxes over a mutually authenticated TLS 1.3 inner channel, and makes the WAN
carry fewer bytes and round trips: data reduction with a persistent chunk
store, zstd, and protocol modules (MAPI/EPM, SMB2/3 read-ahead, RPC over HTTP).
Transparent interception with auto-discovery (TCP option 0x21), explicit
forwards, WCCPv2 registration, a status page with a JSON API and metrics.

The services are installed but neither enabled nor started: write
/etc/wanopt/wanopt.toml first (examples in /usr/share/doc/wanopt/examples).")
# Libraries from dpkg-shlibdeps; the tools deploy/intercept runs (iptables-nft,
# ip, sysctl); adduser for postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, iptables, iproute2, procps")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${WANOPT_DEB_DIR}/postinst ${WANOPT_DEB_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
include(CPack)

add_custom_target(package-deb
  COMMAND ${CMAKE_CPACK_COMMAND} --config ${PROJECT_BINARY_DIR}/CPackConfig.cmake -G DEB
  WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
  COMMENT "Building wanopt_${PROJECT_VERSION}_amd64.deb"
  USES_TERMINAL)
add_dependencies(package-deb wanopt)
