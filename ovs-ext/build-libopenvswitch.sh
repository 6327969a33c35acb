#!/bin/sh
# Configures and builds the static libopenvswitch inside an unpacked OVS
# source tree (run by CMake's ExternalProject in ovs-ext/CMakeLists.txt).
#   build-libopenvswitch.sh configure PYTHON3
#   build-libopenvswitch.sh build JOBS
# Logs go to configure.log / build.log in the tree; on failure their tail is
# printed so CI shows the cause.
set -e
step=$1
case "$step" in
configure)
  # unbound is switched off so the link line does not depend on what else
  # happens to be installed; SSL and libcap-ng stay (ssl: remotes, --user).
  ./configure --enable-static --disable-shared --disable-afxdp \
      ac_cv_lib_unbound_ub_ctx_create=no PYTHON3="$2" >configure.log 2>&1 \
    || { tail -30 configure.log; exit 1; }
  ;;
build)
  # Generated headers first: the library's sources include them and OVS's
  # Makefile does not order them before lib/libopenvswitch.la by itself.
  { make -j"$2" include/odp-netlink.h include/odp-netlink-macros.h \
        ofproto/ipfix-entities.def lib/vswitch-idl.h lib/vswitch-idl.c \
        lib/ovsdb-server-idl.h lib/ovsdb-server-idl.c &&
    make -j"$2" lib/libopenvswitch.la lib/libopenvswitchavx512.la; } >build.log 2>&1 \
    || { tail -40 build.log; exit 1; }
  ;;
*)
  echo "usage: $0 configure PYTHON3 | build JOBS" >&2
  exit 2
  ;;
esac
