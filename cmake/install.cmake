# Install layout (`cmake --install`, and the .deb CPack builds from it with
# prefix /usr; README "Install"):
#   <prefix>/bin/mrprov
#   <prefix>/share/mrprov/{lua,profiles,tiers,hooks,ui,docs}  the product
#     (found by the binary at bin/../share/mrprov: src/config.c SHARE_DIR)
#   <prefix>/share/doc/mrprov/{README.md,env.example}
#   <prefix>/lib/systemd/system/mrprov.service                 Type=notify
#   /etc/mrprov/mrprov.env (0640), /etc/mrprov/tiers/*.lua      configuration
#   /etc/mrprov/hooks/, /etc/mrprov/hosts/                      empty, yours
# /etc/mrprov is absolute (MRPROV_SYSCONFDIR): installing under another
# root takes DESTDIR. The state directory /var/lib/mrprov is the package's
# postinst's (and the unit's StateDirectory=).
set(MRPROV_SYSCONFDIR /etc/mrprov CACHE PATH "Where mrprov's configuration is installed (absolute)")
set(MRPROV_DEB_MAINTAINER "mrprov maintainers <mrprov@localhost>" CACHE STRING "The .deb's Maintainer field")

install(TARGETS mrprov RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

foreach(dir lua profiles tiers hooks)
  install(DIRECTORY ${dir}/ DESTINATION ${MRPROV_DATADIR_REL}/${dir})
endforeach()
# The console and the documentation (being written, issue 17): whatever of
# them the tree has at configure time.
foreach(dir ui docs)
  if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/${dir})
    install(DIRECTORY ${dir}/ DESTINATION ${MRPROV_DATADIR_REL}/${dir})
  endif()
endforeach()
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES .env.example DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME env.example)

install(FILES packaging/mrprov.env DESTINATION ${MRPROV_SYSCONFDIR}
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
file(GLOB MRPROV_TIER_FILES RELATIVE ${CMAKE_SOURCE_DIR} CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tiers/*.lua)
install(FILES ${MRPROV_TIER_FILES} DESTINATION ${MRPROV_SYSCONFDIR}/tiers)
install(DIRECTORY DESTINATION ${MRPROV_SYSCONFDIR}/hooks)
install(DIRECTORY DESTINATION ${MRPROV_SYSCONFDIR}/hosts)

# The unit names the binary by its installed path, known only when
# installing (CPack installs with prefix /usr into a staging DESTDIR).
install(CODE "
  set(MRPROV_BINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
  set(MRPROV_SYSCONFDIR \"${MRPROV_SYSCONFDIR}\")
  set(unit \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/mrprov.service\")
  message(STATUS \"Installing: \${unit}\")
  configure_file(\"${CMAKE_SOURCE_DIR}/packaging/mrprov.service.in\" \"\${unit}\" @ONLY)
  file(CHMOD \"\${unit}\" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
")

# The .deb: `make deb`, or `cpack -G DEB` in the build directory.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mrprov)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${MRPROV_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "provisioner of MindRoom instances on Dokku")
# (CPack puts the summary first and indents every line of this one.)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "mrprov provisions, updates and removes MindRoom instances on Dokku hosts
over SSH, driven by an HTTP API and Supabase webhooks. The service runs as
the system user mrprov under systemd (mrprov.service); its settings are in
/etc/mrprov/mrprov.env, its tiers in /etc/mrprov/tiers.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# The libraries the binary links (dpkg-shlibdeps), plus what it loads at
# run time: libcurl (dlopen'ed, src/supabase/libcurl.h) and the Lua modules
# lua/ requires (cjson, yaml); adduser for postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, libcurl4, lua-cjson, lua-yaml")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
# conffiles: the settings and the tiers (dpkg keeps an operator's edits).
set(MRPROV_CONFFILES "${MRPROV_SYSCONFDIR}/mrprov.env\n")
foreach(f ${MRPROV_TIER_FILES})
  get_filename_component(name ${f} NAME)
  string(APPEND MRPROV_CONFFILES "${MRPROV_SYSCONFDIR}/tiers/${name}\n")
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/packaging/conffiles "${MRPROV_CONFFILES}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_BINARY_DIR}/packaging/conffiles ${CMAKE_SOURCE_DIR}/packaging/postinst
  ${CMAKE_SOURCE_DIR}/packaging/prerm ${CMAKE_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Absolute destinations (/etc/mrprov) need the staging DESTDIR.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
include(CPack)
