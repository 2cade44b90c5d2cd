// original_dst: the destination a TCP connection was sent to before netfilter
// redirected it (iptables nat REDIRECT/DNAT), read with getsockopt
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6). Node exposes neither.
//
// In:  originalDestination(fd) with the file descriptor of an accepted TCP socket.
// Out: { address, port, family: 4 | 6 }, or a thrown Error whose `code` is the
//      errno name (ENOENT: no conntrack entry for the connection, ENOTSOCK,
//      EBADF, ...) and whose `syscall` is the failing call.
//
// Plain N-API (version 8): one binary loads in every Node release that has it.
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>; both are 80.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static const char *errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPERM: return "EPERM";
    default: return "EUNKNOWN";
  }
}

// Throws an Error with .code (errno name), .errno and .syscall, as Node's own errors do.
static void throw_errno(napi_env env, int err, const char *syscall) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s (%s)", syscall, strerror(err), errno_name(err));
  napi_value msg, code, error, errno_value, syscall_value;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, -err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
}

static napi_value make_result(napi_env env, const char *address, int port, int family) {
  napi_value result, a, p, f;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &a);
  napi_create_int32(env, port, &p);
  napi_create_int32(env, family, &f);
  napi_set_named_property(env, result, "address", a);
  napi_set_named_property(env, result, "port", p);
  napi_set_named_property(env, result, "family", f);
  return result;
}

static napi_value original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype type = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &type);
  if (type != napi_number) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "originalDestination(fd): fd must be a number");
    return NULL;
  }
  int32_t fd = -1;
  napi_get_value_int32(env, argv[0], &fd);
  if (fd < 0) {
    throw_errno(env, EBADF, "originalDestination");
    return NULL;
  }

  // The socket's own family decides which table to ask. An IPv4 peer on a
  // dual-stack IPv6 socket (::ffff:a.b.c.d) was tracked, and redirected, as IPv4:
  // the kernel hands SOL_IP options of such a socket to its IPv4 code.
  struct sockaddr_storage local;
  socklen_t local_len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) {
    throw_errno(env, errno, "getsockname");
    return NULL;
  }
  int ipv4 = local.ss_family == AF_INET;
  if (local.ss_family == AF_INET6) {
    ipv4 = IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr);
  } else if (!ipv4) {
    throw_errno(env, EAFNOSUPPORT, "getsockname");
    return NULL;
  }

  char text[INET6_ADDRSTRLEN];
  if (ipv4) {
    struct sockaddr_in dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) {
      throw_errno(env, errno, "getsockopt SO_ORIGINAL_DST");
      return NULL;
    }
    inet_ntop(AF_INET, &dst.sin_addr, text, sizeof text);
    return make_result(env, text, ntohs(dst.sin_port), 4);
  }
  struct sockaddr_in6 dst6;
  socklen_t len6 = sizeof dst6;
  memset(&dst6, 0, sizeof dst6);
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst6, &len6) != 0) {
    throw_errno(env, errno, "getsockopt IP6T_SO_ORIGINAL_DST");
    return NULL;
  }
  inet_ntop(AF_INET6, &dst6.sin6_addr, text, sizeof text);
  return make_result(env, text, ntohs(dst6.sin6_port), 6);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "originalDestination", NAPI_AUTO_LENGTH, original_destination, NULL, &fn);
  napi_set_named_property(env, exports, "originalDestination", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
