// libvirt through its C API: one Connection per use, RAII handles.
//
// Every failing libvirt call throws kiln::Error kLibvirtError carrying
// libvirt's own error code and message ("libvirt error 9 (operation failed):
// domain 'x' already exists ..."); libvirt's default printing of errors to
// stderr is switched off, and SIGPIPE is ignored process-wide (libvirt's
// client would otherwise die of it when libvirtd goes away mid-call; children
// kiln runs get the default back). A Connection may be used from one thread at a time;
// libvirt itself is thread-safe, so separate Connections may run in parallel.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::virt {

class Domain {
 public:
  explicit Domain(virDomainPtr domain);

  const std::string& name() const { return name_; }
  std::string uuid() const;
  // virsh's words: "running", "shut off", "paused", ...
  std::string state() const;
  // The state, or nothing when libvirt no longer knows the domain (undefined
  // since this handle was taken, e.g. by a delete beside a listing).
  std::optional<std::string> state_unless_undefined() const;
  // virDomainGetState's state and reason (virDomainState, and its reason enum).
  std::pair<int, int> state_and_reason() const;
  bool is_active() const;
  bool is_persistent() const;
  // True when the domain's metadata carries kiln's <kiln:instance> element.
  bool is_kiln_instance() const;
  // The domain's <title> (kiln: the request's display name), or nothing when
  // it has none (domains defined before kiln kept the display name there).
  std::optional<std::string> title() const;
  // The definition as libvirt now holds it (virDomainGetXMLDesc, inactive).
  std::string xml() const;

  void start();
  void suspend();   // pauses the vCPUs (virsh suspend)
  void destroy();   // hard power-off; REQUIRES: active
  void undefine();  // removes the persistent definition (and UEFI nvram)

 private:
  std::unique_ptr<virDomain, int (*)(virDomainPtr)> handle_;
  // Cached: every libvirt call resets the thread's last error, so error
  // messages must not call into libvirt while they are being built.
  std::string name_;
};

class Connection {
 public:
  // Opens a read-write connection, e.g. "qemu:///system", "test:///default".
  explicit Connection(const std::string& uri);

  // virDomainDefineXML: the domain is persistent but not started. When the
  // connection is lost during the call, libvirt may or may not have defined
  // it; the error then says so ("lost the connection ... may have accepted")
  // instead of calling it a refusal, and is_alive() turns false.
  Domain define(const std::string& xml);
  std::optional<Domain> lookup_by_uuid(const std::string& uuid);
  // Every domain libvirt knows, active or not, persistent or transient.
  std::vector<Domain> list_domains();

  // Whether the host's capabilities offer a kvm domain type for x86_64
  // guests. That KVM also works is virt_type.h's question.
  bool offers_kvm();
  // Whether libvirt holds a secret with this uuid whose usage type is ceph:
  // what an RBD network disk's <auth><secret type='ceph' uuid=.../> needs
  // (nova leaves defining it, and setting the key, to the operator).
  bool has_ceph_secret(const std::string& uuid);
  // The connection's driver name, e.g. "QEMU", "Test".
  std::string driver();
  // False once libvirt is out of reach on this connection (virConnectIsAlive):
  // the daemon went away or the socket was cut. A dead connection stays dead;
  // open a new Connection to the same uri().
  bool is_alive();

  const std::string& uri() const { return uri_; }

 private:
  std::string uri_;
  std::unique_ptr<virConnect, int (*)(virConnectPtr)> handle_;
};

}  // namespace kiln::virt
